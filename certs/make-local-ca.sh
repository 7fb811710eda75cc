#!/bin/sh
# make-local-ca.sh OUTDIR [DNS-NAME...]
#
# Makes a local certificate authority and a server certificate for xferd, for tests and
# development only: OUTDIR/ca.pem (the CA certificate, to trust), OUTDIR/server.pem (the
# server certificate, signed by the CA, for the names given, default `localhost`, plus
# 127.0.0.1 and ::1) and OUTDIR/server.key (its key). Use them with
#   [tls] cert = "OUTDIR/server.pem"  key = "OUTDIR/server.key"
#
# The keys are FIXED: they are test-ca.key and test-server.key next to this script,
# committed to the repository, so the server's public key is the same on every machine
# and every run, and browser tests can pin it (Chrome:
# --ignore-certificate-errors-spki-list=<the SPKI hash printed at the end>). Everyone has
# these keys: never use them for anything reachable from outside. Real certificates: see
# README.md in this directory.
#
# Needs openssl (1.1.1 or later).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: make-local-ca.sh OUTDIR [DNS-NAME...]}
shift
[ $# -gt 0 ] || set -- localhost
command -v openssl >/dev/null || { echo "make-local-ca.sh: openssl is required" >&2; exit 1; }

mkdir -p "$out"
san="IP:127.0.0.1,IP:::1"
for name in "$@"; do san="DNS:$name,$san"; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

openssl req -x509 -new -key "$here/test-ca.key" -sha256 -days 3650 \
    -subj "/O=xferd/CN=xferd local test CA (NOT FOR PRODUCTION)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem"

openssl req -new -key "$here/test-server.key" -subj "/O=xferd/CN=$1" -out "$tmp/server.csr"
printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=$san" >"$tmp/server.ext"
# 397 days: browsers refuse longer-lived server certificates.
openssl x509 -req -in "$tmp/server.csr" -CA "$out/ca.pem" -CAkey "$here/test-ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 397 -sha256 \
    -extfile "$tmp/server.ext" -out "$out/server.pem" 2>/dev/null

umask 077
cp "$here/test-server.key" "$out/server.key"
chmod 600 "$out/server.key"

spki=$(openssl pkey -in "$out/server.key" -pubout -outform der | openssl dgst -sha256 -binary | openssl base64)
echo "wrote $out/ca.pem, $out/server.pem, $out/server.key (names: $*; TEST KEYS, NOT FOR PRODUCTION)"
echo "server SPKI sha256 (base64, for pinning): $spki"
