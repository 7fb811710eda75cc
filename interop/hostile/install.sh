#!/usr/bin/env bash
# What interop/hostile/run.sh needs: python3 and pycurl with HTTP/3, which
# interop/http/install.sh installs (idempotent). Nothing else: HTTP/2 frames and QUIC
# Initials are written by hand or captured from libcurl.
set -euo pipefail
bash "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/http/install.sh"
