#!/usr/bin/env bash
# Scenario benchmark (not a test): a long blackout mid-upload on an emulated mobile link.
#
#   benches/blackout.sh [/path/to/xferd]       (default: target/release/xferd of this repo)
#
# xferd on loopback; between it and the client, `xferd relay udp` (the project's link
# emulator) with DELAY_MS each way, RATE, LOSS % and, BLACKOUT_AT seconds in, a blackout of
# BLACKOUT_SECS seconds (nothing passes). The client is `xferd upload --http 3` through a
# v3 POST URL (parallel chunk streams). Printed: the client's report (retries = chunk
# requests sent again, reconnects), the relay's datagram counters at each event, goodput,
# and the SHA-256 check.
#
# Env: SIZE_MB (100), RATE (50mbit), DELAY_MS (25), LOSS (0), BLACKOUT_AT (3),
#      BLACKOUT_SECS (10), KEEP_WORK=1.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, stop_pid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
XFERD=$(readlink -f "${1:-$REPO/target/release/xferd}")
SIZE_MB=${SIZE_MB:-100}
RATE=${RATE:-50mbit}
DELAY_MS=${DELAY_MS:-25}
LOSS=${LOSS:-0}
BLACKOUT_AT=${BLACKOUT_AT:-3}
BLACKOUT_SECS=${BLACKOUT_SECS:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-blackout.XXXXXX")
XPID=""
RPID=""
cleanup() {
    stop_pid "$RPID"
    stop_pid "$XPID"
    [ "${KEEP_WORK:-0}" = 1 ] && echo "# kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
SECRET="blackout-$RANDOM$RANDOM"
cat >"$WORK/xferd.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/data"
state_path = "$WORK/state"
[security]
secret = "$SECRET"
TOML
"$XFERD" serve --config "$WORK/xferd.toml" >"$WORK/xferd.log" 2>&1 &
XPID=$!
for _ in $(seq 1 100); do [ -f "$WORK/state/cert.pem" ] && curl -sk "https://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done

head -c $((SIZE_MB * 1048576)) /dev/urandom >"$WORK/file.bin"
SRC_SHA=$(sha256sum "$WORK/file.bin" | cut -d' ' -f1)

"$XFERD" relay udp --to "127.0.0.1:$PORT" --delay-ms "$DELAY_MS" --rate "$RATE" --loss "$LOSS" \
    --blackout-at "$BLACKOUT_AT" --blackout-secs "$BLACKOUT_SECS" >"$WORK/relay.addr" 2>"$WORK/relay.log" &
RPID=$!
for _ in $(seq 1 50); do [ -s "$WORK/relay.addr" ] && break; sleep 0.1; done
RELAY=$(head -1 "$WORK/relay.addr")
URL="https://localhost:${RELAY##*:}$("$XFERD" sign --secret "$SECRET" --scheme v3 --method POST --path blackout.bin | sed 's#^https://[^/]*##')"

echo "== xferd blackout scenario"
echo "date:    $(date -u +%FT%TZ)   commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')   nproc: $(nproc)"
echo "link:    xferd relay udp: ${DELAY_MS} ms each way, $RATE, loss $LOSS %, blackout ${BLACKOUT_SECS} s at t=${BLACKOUT_AT} s"
echo "file:    $SIZE_MB MiB random; client: xferd upload --http 3 (v3 POST URL: chunk streams)"
T0=$(date +%s.%N)
timeout 900 "$XFERD" upload "$WORK/file.bin" "$URL" --ca "$WORK/state/cert.pem" --http 3 --quiet -v \
    >"$WORK/report.json" 2>"$WORK/client.log" || { echo "upload FAILED"; tail -5 "$WORK/client.log"; exit 1; }
T1=$(date +%s.%N)
cat "$WORK/relay.log"
grep -E 'retry|breaker|resumed|connected' "$WORK/client.log" | head -20 || true
python3 - "$WORK/report.json" "$SIZE_MB" "$T0" "$T1" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
size = int(sys.argv[2]) * 1048576
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"client:  protocol {r['protocol']}, {r['streams']} streams, chunk {r['chunk_size']} B, "
      f"{r['retries']} chunk requests sent again, {r['reconnects']} reconnects, {r['zero_rtt']} 0-RTT resumptions")
print(f"result:  completed in {wall:.1f} s (blackout included), goodput {size/wall/1e6:.2f} MB/s; "
      f"chunk bytes sent again <= {r['retries'] * r['chunk_size']} B "
      f"({r['retries']} x chunk; at most one chunk per stream: {'yes' if r['retries'] <= r['streams'] else 'NO'})")
PY
GOT=$(sha256sum "$WORK/data/blackout.bin" | cut -d' ' -f1)
[ "$GOT" = "$SRC_SHA" ] && echo "sha256:  stored file matches the source ($GOT)" || { echo "sha256: MISMATCH"; exit 1; }
