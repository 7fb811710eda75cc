#!/usr/bin/env bash
# Installs what interop/xmpp/run.sh needs on a Debian 12 machine (run as root).
# Idempotent: does nothing that is already done. Never leaves Prosody or
# ejabberd running as system services (run.sh starts its own instances).
set -euo pipefail

PKGS="prosody prosody-modules ejabberd lua-luaossl lua-sec lua-socket lua-expat lua-filesystem lua-unbound curl procps"
SLIXMPP_VERSION="1.17.0"
# slixmpp's XEP-0363 plugin imports aiohttp (an optional extra of slixmpp).
AIOHTTP_VERSION="3.14.5"

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must run as root" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

stop_services() {
    # The packages' maintainer scripts may have started daemons (where an
    # init system allows it). Stop them so they hold no ports.
    for svc in ejabberd prosody; do
        # only if a daemon of that system user runs (the ejabberd init script's
        # "stop" would itself start epmd)
        pgrep -u "$svc" >/dev/null 2>&1 || continue
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            timeout 30 systemctl stop "$svc" >/dev/null 2>&1 || true
            timeout 30 systemctl disable "$svc" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$svc" ]; then
            timeout 30 "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    done
    # ejabberd's postinst probes for a running node with "ejabberdctl status",
    # which leaves an Erlang port mapper daemon (epmd) listening on *:4369.
    # run.sh does not need it (ERL_DIST_PORT): stop it if no node uses it.
    if command -v epmd >/dev/null 2>&1 && timeout 10 epmd -names 2>/dev/null | grep -q '^epmd: up'; then
        if ! timeout 10 epmd -names 2>/dev/null | grep -q '^name '; then
            timeout 10 epmd -kill >/dev/null 2>&1 || true
        fi
    fi
}

if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    # Forbid maintainer scripts from starting services during the install.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    cleanup_policy() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
    trap cleanup_policy EXIT
    # apt-get update once, only if the package lists do not know a package.
    need_update=0
    for p in $missing; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then need_update=1; fi
    done
    if [ "$need_update" = 1 ]; then
        apt-get update
    fi
    # shellcheck disable=SC2086
    if ! apt-get install -y --no-install-recommends $missing; then
        # stale package lists (a version no longer served): refresh once
        [ "$need_update" = 1 ] && exit 1
        apt-get update
        apt-get install -y --no-install-recommends $missing
    fi
    stop_services
    cleanup_policy
    trap - EXIT
fi

# Python side: slixmpp for the XMPP client.
if ! command -v python3 >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-pip
fi
if ! python3 -c "import sys, slixmpp, aiohttp; sys.exit(0 if (slixmpp.__version__, aiohttp.__version__) == ('$SLIXMPP_VERSION', '$AIOHTTP_VERSION') else 1)" >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    if ! python3 -m pip install "slixmpp==$SLIXMPP_VERSION" "aiohttp==$AIOHTTP_VERSION"; then
        # Debian's own python3 is "externally managed" (PEP 668).
        python3 -m pip install --break-system-packages "slixmpp==$SLIXMPP_VERSION" "aiohttp==$AIOHTTP_VERSION"
    fi
fi

echo "interop/xmpp: dependencies installed"
