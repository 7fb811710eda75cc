#!/usr/bin/env bash
# Installs what interop/browser/run.sh needs, idempotently: Debian's chromium (the browser
# under test), ffmpeg (only to make the test video), openssl (the SPKI pin of the test key),
# node + npm, and playwright-core at the version pinned in interop/browser/package-lock.json
# (no browser download: Playwright drives the Debian binary).
# Usage: interop/services/install-chromium.sh   (as root, or with sudo available)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BROWSER_DIR="$HERE/../browser"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v openssl >/dev/null || need+=(openssl)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

want=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/playwright-core"].version)' \
    "$BROWSER_DIR/package-lock.json")
have=$(node -e 'try { console.log(require(process.argv[1]).version) } catch (e) { console.log("") }' \
    "$BROWSER_DIR/node_modules/playwright-core/package.json")
if [ "$have" != "$want" ]; then
    (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
echo "chromium: $(chromium --version 2>/dev/null | head -n1); playwright-core $want; $(ffmpeg -version | head -n1)"
