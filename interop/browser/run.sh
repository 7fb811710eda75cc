#!/usr/bin/env bash
# The upload page in a real browser: Debian's chromium, headless, driven by playwright-core
# (test.js), against an xferd started here with the committed fixed-key test certificate
# (certs/), once over HTTP/3 (QUIC forced for the test origin, the key's SPKI pinned) and
# once over HTTP/2 (QUIC off). Every scenario asserts the protocol the browser really used
# (nextHopProtocol and the server's own per-protocol metrics), since Chromium falls back to
# TCP silently.
# Usage: interop/browser/run.sh /path/to/xferd
# Needs what interop/services/install-chromium.sh installs; without chromium it prints
# "SKIPPED: chromium not installed" and exits 0, unless CI or XFERD_REQUIRE_SERVICES is set
# (then it fails). Screenshots go to $XFERD_ARTIFACTS (default target/browser-artifacts/),
# printed at the end. Prints "PASS name" / "FAIL name: reason" lines and "N passed, M
# failed"; exits non-zero on any failure. KEEP_WORK=1 keeps the temp dir; ONLY=page,
# ONLY=zerortt or ONLY=converse runs one part. The Converse.js part also needs Prosody with
# mod_http_upload_external (interop/xmpp/install.sh); without it that part is SKIPPED (or
# fails under CI / XFERD_REQUIRE_SERVICES).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"  # free_port

if [ "$#" -ne 1 ]; then
    echo "usage: $0 /path/to/xferd" >&2
    exit 64
fi
XFERD=$(readlink -f "$1")
[ -x "$XFERD" ] || { echo "not executable: $1" >&2; exit 64; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

missing() {
    if [ -n "${CI:-}" ] || [ -n "${XFERD_REQUIRE_SERVICES:-}" ]; then
        echo "FAIL browser: $1 not installed (run interop/services/install-chromium.sh)"
        exit 1
    fi
    echo "SKIPPED: $1 not installed (run interop/services/install-chromium.sh)"
    exit 0
}
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
[ -n "$CHROMIUM" ] || missing chromium
command -v node >/dev/null || missing node
command -v openssl >/dev/null || missing openssl
command -v ffmpeg >/dev/null || missing ffmpeg
[ -f "$HERE/node_modules/playwright-core/package.json" ] || missing playwright-core

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-browser.XXXXXX")
cleanup() {
    local rc=$?
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The fixed-key test certificate, and the pin Chromium needs to use QUIC with it.
sh "$REPO/certs/make-local-ca.sh" "$WORK/certs" localhost >/dev/null 2>&1
PIN=$(openssl x509 -in "$WORK/certs/server.pem" -pubkey -noout \
    | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)
ARTIFACTS=${XFERD_ARTIFACTS:-$REPO/target/browser-artifacts}
mkdir -p "$ARTIFACTS"

export XFERD CHROMIUM WORK PIN ARTIFACTS
export PORT_H3=$(free_port) PORT_H2=$(free_port) PORT_CONVERSE_H3=$(free_port) PORT_CONVERSE_H2=$(free_port) PORT_ZERORTT=$(free_port)
rc=0
timeout 600 node "$HERE/test.js" || rc=$?
echo "artifacts (screenshots, xferd logs): $ARTIFACTS"
exit "$rc"
