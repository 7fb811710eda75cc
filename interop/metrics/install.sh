#!/usr/bin/env bash
# Installs promtool (Prometheus's own linter for the text exposition format), used by
# interop/metrics/run.sh, on a fresh Debian 12 machine (run as root). Idempotent.
#
# Debian ships promtool only inside the `prometheus` package, which also brings the server,
# its web UI's JavaScript libraries and a service that would start on :9090. promtool is a
# static Go binary depending only on libc, so this takes just that file out of the package
# (`apt-get download` + `dpkg-deb -x`) into /usr/local/bin. If that fails, it installs the
# package instead (without recommends) and stops the packaged service if one started.
# The HTTP/3 client (pycurl) and curl come from interop/http/install.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if command -v promtool >/dev/null 2>&1 && promtool --version >/dev/null 2>&1; then
    promtool --version 2>&1 | head -n1
    exit 0
fi

have_lists() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
have_lists || timeout 600 apt-get update

TMP=$(mktemp -d /tmp/promtool-dl.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"
id _apt >/dev/null 2>&1 && chown _apt "$TMP" || true   # apt downloads as _apt

extract() {
    (cd "$TMP" && timeout 600 apt-get download prometheus) || return 1
    local deb
    deb=$(ls "$TMP"/prometheus_*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || return 1
    mkdir -p "$TMP/x"
    dpkg-deb -x "$deb" "$TMP/x" || return 1
    [ -x "$TMP/x/usr/bin/promtool" ] || return 1
    install -m 0755 "$TMP/x/usr/bin/promtool" /usr/local/bin/promtool
}

if ! extract; then
    # Stale lists (a version gone from the mirror): refresh once and retry.
    timeout 600 apt-get update
    if ! extract; then
        echo "# extracting promtool failed; installing the prometheus package" >&2
        timeout 900 apt-get install -y --no-install-recommends prometheus
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus >/dev/null 2>&1 || true
        elif [ -x /etc/init.d/prometheus ]; then
            /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        fi
    fi
fi

promtool --version 2>&1 | head -n1
