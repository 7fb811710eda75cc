#!/usr/bin/env bash
# Installs the third-party clients and peers used by interop/http/run.sh and
# benches/transfer.sh on a fresh Debian 12 machine (run as root). Idempotent:
# every step is skipped when what it installs is already there.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

need_apt=()
command -v curl  >/dev/null 2>&1 || need_apt+=(curl)
command -v caddy >/dev/null 2>&1 || need_apt+=(caddy)
command -v sha256sum >/dev/null 2>&1 || need_apt+=(coreutils)

if [ "${#need_apt[@]}" -gt 0 ]; then
    # Package lists are empty on a fresh machine: fetch them once.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        timeout 600 apt-get update
    fi
    if ! timeout 900 apt-get install -y --no-install-recommends "${need_apt[@]}"; then
        # Stale lists (a package version gone from the mirror): refresh and retry once.
        timeout 600 apt-get update
        timeout 900 apt-get install -y --no-install-recommends "${need_apt[@]}"
    fi
fi

# The Debian caddy package enables a system caddy service on :80 where systemd
# runs; our scripts start their own caddy, so stop the packaged one if active.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now caddy >/dev/null 2>&1 || true
fi

PY="${PYTHON:-python3}"
# pycurl >= 7.45.4 wheels bundle a libcurl built with HTTP/3 (ngtcp2).
if ! "$PY" - <<'PYEOF' 2>/dev/null
import sys, pycurl
v = pycurl.version_info()
features = v[4]
sys.exit(0 if features & pycurl.VERSION_HTTP3 else 1)
PYEOF
then
    pip_args=(install --upgrade --only-binary=:all: 'pycurl>=7.45.4')
    if ! timeout 600 "$PY" -m pip "${pip_args[@]}"; then
        # Debian's system Python refuses pip installs (PEP 668) unless told.
        timeout 600 "$PY" -m pip "${pip_args[@]}" --break-system-packages
    fi
fi

curl --version | head -n1
caddy version
"$PY" -c 'import pycurl; print(pycurl.version)'
