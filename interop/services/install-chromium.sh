#!/usr/bin/env bash
# Installs what interop/browser/run.sh needs, idempotently: Debian's chromium (the browser
# under test), ffmpeg (only to make the test video), openssl (the SPKI pin of the test key),
# node + npm, and the npm packages pinned in interop/browser/package-lock.json: playwright-core
# (no browser download: Playwright drives the Debian binary) and converse.js (the browser
# XMPP client of the Converse.js scenario, which also needs Prosody with
# mod_http_upload_external: interop/xmpp/install.sh).
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

# The installed versions of the pinned packages, against the lock file.
versions() {
    node -e '
        const dir = process.argv[1];
        const lock = require(dir + "/package-lock.json").packages;
        for (const p of ["playwright-core", "converse.js"]) {
            let have = "";
            try { have = require(dir + "/node_modules/" + p + "/package.json").version; } catch (e) {}
            console.log(p, lock["node_modules/" + p].version, have);
        }' "$BROWSER_DIR"
}
if versions | awk '$2 != $3 { bad = 1 } END { exit bad ? 0 : 1 }'; then
    (cd "$BROWSER_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
echo "chromium: $(chromium --version 2>/dev/null | head -n1); $(versions | awk '{ printf "%s %s; ", $1, $3 }')$(ffmpeg -version | head -n1)"
