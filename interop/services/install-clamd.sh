#!/bin/sh
# Installs clamd (Debian clamav-daemon, pinned) for tests/scan.rs. Idempotent.
# No service is started and freshclam is not run: the tests write their own
# signature database and start a private clamd on it (tests/common/clamd.rs).
set -eu
VERSION="1.4.3+dfsg-1~deb12u2"
if command -v clamd >/dev/null 2>&1 && dpkg-query -W -f='${Version}' clamav-daemon 2>/dev/null | grep -qx "$VERSION"; then
    echo "clamd $VERSION already installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y --no-install-recommends \
    "clamav-daemon=$VERSION" "clamav-base=$VERSION" "clamav-freshclam=$VERSION" "libclamav12=$VERSION"
# Debian starts nothing in containers, but make sure no packaged daemon holds
# the default socket or runs freshclam against the network.
$SUDO systemctl disable --now clamav-daemon clamav-freshclam >/dev/null 2>&1 || true
command -v clamd
