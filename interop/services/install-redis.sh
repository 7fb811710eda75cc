#!/usr/bin/env bash
# Installs Redis 7 from Debian (the shared session store of `[cluster] redis_url`, used by
# tests/cluster.rs and the storage contract tests). Idempotent; starts no service: the
# tests start their own private redis-server on a free loopback port.
set -euo pipefail
# Debian 12 (bookworm) ships Redis 7.0.15; any 7.0.x from Debian is accepted.
WANT_MAJOR=7
if command -v redis-server >/dev/null 2>&1 &&
  redis-server --version | grep -q "v=${WANT_MAJOR}\."; then
  echo "redis-server present: $(redis-server --version)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server
# Debian's package enables a system service; the tests never use it.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
redis-server --version | grep -q "v=${WANT_MAJOR}\." || {
  echo "redis-server is not version ${WANT_MAJOR}: $(redis-server --version)" >&2
  exit 1
}
echo "installed: $(redis-server --version)"
