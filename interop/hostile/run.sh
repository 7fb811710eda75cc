#!/usr/bin/env bash
# Hostile-load suite (issue 15 section 2): slowloris on h1 and h2, 5,000 idle TCP connections,
# HTTP/2 Rapid Reset and CONTINUATION floods, oversized heads over h1/h2/h3, 1,000-range and
# overlapping-range requests, random UDP and QUIC Initial floods, 1,000 uploads trickling at
# 1 KiB/s, HEAD/PATCH floods on random resumable ids, downloads never read.
# Usage: interop/hostile/run.sh /path/to/xferd [--only case,case]
# Each case runs against a fresh xferd on 127.0.0.1 (free port, temp dir), the attack from
# 127.0.0.2, for a bounded time and count, while the server's RSS is sampled (bound stated per
# case), a well-behaved client makes a signed GET every 200 ms (answer correct within 1 s) and
# the log is checked for panics; afterwards GET /health must be 200. See hostile.py.
# Prints PASS/FAIL per case, a table and a summary line; exits non-zero on any failure.
# Needs python3 and pycurl with HTTP/3 (interop/hostile/install.sh). Loopback only.
set -euo pipefail
if [ "$#" -lt 1 ]; then
    echo "usage: $0 /path/to/xferd [--only case,...]" >&2
    exit 64
fi
XFERD=$(readlink -f "$1")
shift
[ -x "$XFERD" ] || { echo "not executable: $XFERD" >&2; exit 64; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/hostile/install.sh" >&2; exit 69; }
# 5,000 client sockets plus the server's 1,024 connections and its files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 12000 ] || { echo "need at least 12000 open files (ulimit -n is $(ulimit -n))" >&2; exit 69; }
exec "$PY" "$HERE/hostile.py" run "$XFERD" "$@"
