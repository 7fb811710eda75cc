#!/usr/bin/env bash
# Installs the third-party resumable-upload clients and peers used by
# interop/resumable/run.sh and benches/tus.sh on a fresh Debian 12 machine (run as root).
# Idempotent: every step is skipped when what it installs is already there.
#   - tuspy (PyPI, pinned) for Python;
#   - tus-js-client (npm, pinned by interop/resumable/node/package-lock.json);
#   - @tus/server + @tus/file-store (npm, pinned by benches/tus/package-lock.json);
#   - curl and pycurl with HTTP/3, through interop/http/install.sh, when missing.
# Node.js 20.19+ is expected on the machine (@tus/server 2.x needs it); without node,
# Debian's nodejs/npm are installed (older: enough for tus-js-client, not for the bench peer).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY="${PYTHON:-python3}"
TUSPY_VERSION=1.1.0
export DEBIAN_FRONTEND=noninteractive

apt_install() {
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        timeout 600 apt-get update
    fi
    if ! timeout 900 apt-get install -y --no-install-recommends "$@"; then
        timeout 600 apt-get update
        timeout 900 apt-get install -y --no-install-recommends "$@"
    fi
}

# curl + pycurl with HTTP/3 (shared with the HTTP interop suite).
if ! command -v curl >/dev/null 2>&1 || ! "$PY" - <<'PYEOF' 2>/dev/null
import sys, pycurl
sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)
PYEOF
then
    bash "$REPO/interop/http/install.sh"
fi

# tuspy, pinned.
have=$("$PY" -c 'import importlib.metadata as m; print(m.version("tuspy"))' 2>/dev/null || true)
if [ "$have" != "$TUSPY_VERSION" ]; then
    pip_args=(install "tuspy==$TUSPY_VERSION")
    if ! timeout 600 "$PY" -m pip "${pip_args[@]}"; then
        # Debian's system Python refuses pip installs (PEP 668) unless told.
        timeout 600 "$PY" -m pip "${pip_args[@]}" --break-system-packages
    fi
fi

# Node.js + npm.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "warning: node $(node --version) is older than 20.19: @tus/server (benches/tus.sh) may not run" >&2
fi

# npm packages exactly as the lock files say; skipped when node_modules already matches.
npm_ci() { # dir
    local dir=$1
    if [ -f "$dir/node_modules/.package-lock.json" ] \
        && node -e '
const a = require(process.argv[1] + "/package-lock.json").packages || {};
const b = require(process.argv[1] + "/node_modules/.package-lock.json").packages || {};
for (const k of Object.keys(a)) { if (k && (!b[k] || b[k].version !== a[k].version)) process.exit(1) }
' "$dir" 2>/dev/null; then
        return 0
    fi
    (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
}
npm_ci "$HERE/node"
npm_ci "$REPO/benches/tus"

"$PY" -c 'import importlib.metadata as m; print("tuspy", m.version("tuspy"))'
echo "node $(node --version), npm $(npm --version)"
node -e 'for (const [d, p] of [[process.argv[1], "tus-js-client"], [process.argv[2], "@tus/server"], [process.argv[2], "@tus/file-store"]])
  console.log(p, require(d + "/node_modules/" + p + "/package.json").version)' "$HERE/node" "$REPO/benches/tus"
