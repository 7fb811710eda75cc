#!/usr/bin/env bash
# Installs the peers and load tools of benches/compare.sh on a fresh Debian 12 machine (run as
# root). Idempotent: each step is skipped when what it installs is there already.
#
#   nginx 1.22 (Debian; WebDAV PUT is built in: --with-http_dav_module), caddy 2.6 and curl +
#   pycurl with HTTP/3 (interop/http/install.sh), ngtcp2's gtlsserver (bookworm-backports,
#   the C reference HTTP/3 server), h2load (nghttp2-client), @tus/server + tuspy +
#   tus-js-client (interop/resumable/install.sh), oha with HTTP/3 (cargo install: slow,
#   about 10 minutes on 2 cores; NO_OHA=1 skips it and the h3 small-file row is then "-").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

bash interop/http/install.sh
bash interop/resumable/install.sh

apt_install() { # [apt-get install args...]
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then timeout 600 apt-get update; fi
    timeout 900 apt-get install -y --no-install-recommends "$@" \
        || { timeout 600 apt-get update && timeout 900 apt-get install -y --no-install-recommends "$@"; }
}

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ "${#need[@]}" -eq 0 ] || apt_install "${need[@]}"

if ! command -v gtlsserver >/dev/null 2>&1; then
    # ngtcp2-server 1.x is in bookworm-backports only (bookworm's 0.12 predates RFC 9114 fixes).
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat >/etc/apt/sources.list.d/xferd-bench-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        timeout 600 apt-get update
    fi
    apt_install -t bookworm-backports ngtcp2-server
fi

# The Debian packages start system services where an init runs them; compare.sh starts its
# own instances on free ports, so stop the packaged ones.
for svc in nginx ngtcp2d caddy; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
done

if [ "${NO_OHA:-0}" != 1 ] && ! command -v oha >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/oha" ]; then
    timeout 3000 cargo install oha --locked --features http3
fi

nginx -v
gtlsserver --help 2>&1 | head -n1
h2load --version | head -n1
command -v oha >/dev/null 2>&1 && oha --version || "$HOME/.cargo/bin/oha" --version 2>/dev/null || echo "oha: not installed"
