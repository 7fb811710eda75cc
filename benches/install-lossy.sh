#!/usr/bin/env bash
# Installs what benches/lossy.sh needs on Debian 12 (run as root), skipping what is there:
# iproute2 (ip netns, veth, tc tbf), nftables (random loss), ethtool (offloads off on the
# veth pair, so that loss and rate apply per wire packet), openssl (a certificate for the
# namespace address), curl. `xferd upload` is the client, so nothing else is needed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)

if [ "${#need_apt[@]}" -gt 0 ]; then
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        timeout 600 apt-get update
    fi
    if ! timeout 900 apt-get install -y --no-install-recommends "${need_apt[@]}"; then
        timeout 600 apt-get update
        timeout 900 apt-get install -y --no-install-recommends "${need_apt[@]}"
    fi
fi
# nftables' package may enable a service that loads /etc/nftables.conf into the host's
# namespace; lossy.sh only ever touches namespaces it creates, so nothing to undo here.
nft --version
ip -V
ethtool --version
