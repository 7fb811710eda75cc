#!/usr/bin/env bash
# Interop suite: two xferd instances, A and B, on the s3 backend, sharing one SeaweedFS
# bucket, one Redis, the secret and the certificate - driven by third-party clients.
#
#   interop/cluster/run.sh /path/to/xferd
#
# Starts its own SeaweedFS (`weed mini`) and redis-server on loopback ports, data in a temp
# dir (all killed by PID and deleted at the end), then checks:
#   - tuspy and tus-js-client: an upload created on A, half PATCHed there, continued on B
#     (and the reverse, B then A); B must report the offset A acknowledged, and the file
#     downloaded from the other instance must have the source's SHA-256. These need the
#     S3 part store (session bytes in the bucket, so that any instance continues an upload):
#     with parts on an instance's local disk they fail, and that failure is right;
#   - tuspy whole upload on A on the s3 backend, downloaded from B;
#   - a plain signed PUT to A (curl), GETs from B: whole (h1, h2), byte ranges, a suffix
#     range, a multi-range (h1), a range over HTTP/3 (pycurl), an unsatisfiable range (416);
#   - the same key PUT concurrently on A and B: exactly one 201 and one 409, and the stored
#     object is one of the two bodies whole.
# Prints PASS/FAIL lines, the S3 requests and Redis commands some of them cost (from
# /metrics and INFO commandstats), and a summary; exits non-zero when anything failed.
# Env: KEEP_WORK=1 keeps the temp dir, TMPDIR picks its parent, PYTHON, NODE.
# Needs benches/install-s3-peers.sh (or: interop/services/install-seaweedfs.sh,
# install-redis.sh, interop/resumable/install.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$REPO/interop/lib.sh"          # free_port, stop_pid, pass/fail
. "$HERE/lib.sh"                  # weed_start, redis_start, shared_cert, xferd_config, ...

if [ "$#" -ne 1 ]; then
    echo "usage: $0 /path/to/xferd" >&2
    exit 64
fi
XFERD=$(readlink -f "$1")
[ -x "$XFERD" ] || { echo "not executable: $1" >&2; exit 64; }
PY=${PYTHON:-python3}
NODE=${NODE:-node}
H3="$REPO/interop/http/h3_client.py"
for tool in weed redis-server redis-cli curl openssl timeout sha256sum "$PY" "$NODE"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-s3-peers.sh" >&2; exit 69; }
done
"$PY" -c 'import tusclient' 2>/dev/null || { echo "tuspy missing: run interop/resumable/install.sh" >&2; exit 69; }
[ -d "$REPO/interop/resumable/node/node_modules/tus-js-client" ] \
    || { echo "tus-js-client missing: run interop/resumable/install.sh" >&2; exit 69; }
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' 2>/dev/null \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-cluster.XXXXXX")
APID=""
BPID=""
WEED_PID=""
REDIS_PID=""
cleanup() {
    local rc=$?
    stop_pid "$APID"
    stop_pid "$BPID"
    stop_pid "$WEED_PID"
    stop_pid "$REDIS_PID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BUCKET=xferd-cluster
SECRET="cluster-secret-$RANDOM$RANDOM$RANDOM"
export S3_PART_MB=5   # the minimum part: chunks of 3 MiB leave tails below it
weed_start "$WORK/weed" "$BUCKET" || exit 1
redis_start "$WORK/redis" || exit 1
shared_cert "$WORK/pki"
PA=$(free_port)
PB=$(free_port)
xferd_config "$WORK/a.toml" "$PA" "" "$WORK/a" "$SECRET" 64 s3 "$BUCKET" "$WORK/pki" "$REDIS_PORT"
xferd_config "$WORK/b.toml" "$PB" "" "$WORK/b" "$SECRET" 64 s3 "$BUCKET" "$WORK/pki" "$REDIS_PORT"
xferd_start "$XFERD" "$WORK/a.toml" "$WORK/a.log" "https://127.0.0.1:$PA/health" || exit 1
APID=$XFERD_PID
xferd_start "$XFERD" "$WORK/b.toml" "$WORK/b.log" "https://127.0.0.1:$PB/health" || exit 1
BPID=$XFERD_PID
BASE_A="https://127.0.0.1:$PA"
BASE_B="https://127.0.0.1:$PB"
export NODE_EXTRA_CA_CERTS="$WORK/pki/cert.pem" REQUESTS_CA_BUNDLE="$WORK/pki/cert.pem"
CURL=(curl -sS --cacert "$WORK/pki/cert.pem" --connect-timeout 5 --max-time 120)
echo "# xferd $("$XFERD" --version | head -n1) at $XFERD; A $BASE_A, B $BASE_B; SeaweedFS $WEED_ENDPOINT; redis :$REDIS_PORT"

# sign METHOD PATH BASE -> a signed URL of PATH at BASE (both instances share the secret).
sign() { timeout 10 "$XFERD" sign --config "$WORK/a.toml" --scheme v3 --method "$1" --path "$2" --expires 1h --base-url "$3/"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# slice FILE OFFSET LEN: those bytes of FILE on stdout.
slice() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }
# warnings FILE: the last warnings and errors of an instance's log.
warnings() { grep -E 'WARN|ERROR' "$1" | tail -n 5 || true; }
j() { "$PY" -c 'import json,sys
try: d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception: d = {}
v = d.get(sys.argv[2], "")
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)' "$1" "$2"; }
base_of() { [ "$1" = A ] && echo "$BASE_A" || echo "$BASE_B"; }
other() { [ "$1" = A ] && echo B || echo A; }
N=0
next() { N=$((N + 1)); echo "$WORK/case$N"; }
# costs NAME BEFORE_S3_A BEFORE_S3_B BEFORE_REDIS: prints what NAME cost in S3 and Redis calls.
costs() {
    echo "# cost of $1: S3 $(ops_diff "$2 $3" "$(s3_ops "$BASE_A/metrics") $(s3_ops "$BASE_B/metrics")"); Redis $(ops_diff "$4" "$(redis_calls)")"
}
snap() { S3A=$(s3_ops "$BASE_A/metrics"); S3B=$(s3_ops "$BASE_B/metrics"); RC=$(redis_calls); }

# download_check NAME BASE PATH SRC: GET from BASE, SHA-256 must be SRC's.
download_check() {
    local name=$1 base=$2 p=$3 src=$4 f code
    f=$(next)
    code=$("${CURL[@]}" -o "$f.body" -D "$f.h" -w '%{http_code}' "$(sign GET "$p" "$base")" 2>"$f.err" || true)
    if [ "$code" = 200 ] && [ "$(sha "$f.body")" = "$(sha "$src")" ]; then
        pass "$name"
    else
        { echo "GET $base/$p -> $code, sha256 $(sha "$f.body" 2>/dev/null || echo none), want $(sha "$src")"; cat "$f.h" "$f.err" 2>/dev/null; } >"$f.ev"
        fail "$name" "download does not match the source" "$f.ev"
    fi
    rm -f "$f.body"
}

MIB=$((1024 * 1024))
SRC="$WORK/src"
mkdir -p "$SRC"
head -c $((21 * MIB + 12345)) /dev/urandom >"$SRC/tus.bin"   # 7+ chunks of 3 MiB, tail odd
head -c $((17 * MIB + 777)) /dev/urandom >"$SRC/put.bin"
head -c $((11 * MIB + 1)) /dev/urandom >"$SRC/race1.bin"
head -c $((11 * MIB + 2)) /dev/urandom >"$SRC/race2.bin"
CHUNK=$((3 * MIB))
SPLIT=$((9 * MIB))     # three chunks on the first instance, the rest on the second

# ---------------------------------------------------------------- tus, split across A and B
for client in tuspy tus-js-client; do
    for first in A B; do
        second=$(other "$first")
        name="$client: created on $first, continued on $second"
        p="cluster/$client-$first$second.bin"
        f=$(next)
        snap
        rc=0
        case $client in
            tuspy) timeout 180 "$PY" "$HERE/tus_split.py" "$(sign PUT "$p" "$(base_of "$first")")" "$(base_of "$second")" \
                       "$SRC/tus.bin" --split-at "$SPLIT" --chunk-size "$CHUNK" --metadata filename=tus.bin \
                       >"$f.json" 2>"$f.err" || rc=$? ;;
            tus-js-client) timeout 180 "$NODE" "$HERE/tus_split.mjs" "$(sign PUT "$p" "$(base_of "$first")")" \
                       "$(base_of "$second")" "$SRC/tus.bin" --split-at "$SPLIT" --chunk-size "$CHUNK" \
                       >"$f.json" 2>"$f.err" || rc=$? ;;
        esac
        if [ "$client" = tuspy ]; then acked=$(j "$f.json" offset_a); resumed=$(j "$f.json" offset_b_start)
        else acked=$(j "$f.json" offset_a); resumed=$(j "$f.json" head_offset_b); fi
        if [ "$rc" = 0 ] && [ -n "$acked" ] && [ "$acked" = "$resumed" ] && [ "$acked" -ge "$SPLIT" ]; then
            pass "$name (B-side offset $resumed = acknowledged on the first)"
            costs "$name" "$S3A" "$S3B" "$RC"
            download_check "$name: SHA-256 of the download from $first" "$(base_of "$first")" "$p" "$SRC/tus.bin"
        else
            { cat "$f.json"; echo "stderr:"; tail -n 15 "$f.err"; echo "--- A log"; warnings "$WORK/a.log"; echo "--- B log"; warnings "$WORK/b.log"; } >"$f.ev"
            fail "$name" "exit $rc, acknowledged on $first: ${acked:-?}, offset reported by $second: ${resumed:-?} (needs the S3 part store)" "$f.ev"
        fi
    done
done

# ---------------------------------------------------------------- tus on one instance
f=$(next)
snap
rc=0
timeout 180 "$PY" "$REPO/interop/resumable/tus_py.py" upload "$(sign PUT cluster/tuspy-A.bin "$BASE_A")" "$SRC/tus.bin" \
    --chunk-size "$CHUNK" --metadata filename=tus.bin >"$f.json" 2>"$f.err" || rc=$?
if [ "$rc" = 0 ] && [ "$(j "$f.json" offset)" = "$(stat -c %s "$SRC/tus.bin")" ]; then
    pass "tuspy: whole upload on A (s3 backend)"
    costs "a tuspy upload of 21 MiB in 3 MiB PATCHes on one instance" "$S3A" "$S3B" "$RC"
    download_check "tuspy on A: SHA-256 of the download from B" "$BASE_B" cluster/tuspy-A.bin "$SRC/tus.bin"
else
    { cat "$f.json"; tail -n 15 "$f.err"; } >"$f.ev"
    fail "tuspy: whole upload on A (s3 backend)" "exit $rc" "$f.ev"
fi

# ---------------------------------------------------------------- plain PUT on A, GETs from B
P=cluster/put.bin
f=$(next)
snap
code=$("${CURL[@]}" --http1.1 -H 'Expect:' -T "$SRC/put.bin" -o "$f.b" -w '%{http_code}' "$(sign PUT "$P" "$BASE_A")" 2>"$f.err" || true)
if [ "$code" = 201 ]; then
    pass "signed PUT of 17 MiB to A: 201"
    costs "a signed PUT of 17 MiB (parts of 5 MiB)" "$S3A" "$S3B" "$RC"
else
    fail "signed PUT of 17 MiB to A" "status $code, want 201" "$f.err"
fi
for v in 1.1 2; do
    f=$(next)
    code=$("${CURL[@]}" --http"$v" -o "$f.body" -w '%{http_code} %{http_version}' "$(sign GET "$P" "$BASE_B")" 2>"$f.err" || true)
    if [ "$code" = "200 ${v%.1}" ] || [ "$code" = "200 $v" ]; then
        if [ "$(sha "$f.body")" = "$(sha "$SRC/put.bin")" ]; then pass "GET from B over HTTP/$v: whole file, SHA-256 matches"
        else fail "GET from B over HTTP/$v" "SHA-256 differs"; fi
    else
        fail "GET from B over HTTP/$v" "status/version '$code', want 200 $v" "$f.err"
    fi
    rm -f "$f.body"
done
# range_check NAME RANGE FIRST LAST [curl flags]: bytes FIRST..LAST of the source, 206.
range_check() {
    local name=$1 range=$2 a=$3 b=$4 f code
    shift 4
    f=$(next)
    snap
    code=$("${CURL[@]}" "$@" -H "Range: bytes=$range" -D "$f.h" -o "$f.body" -w '%{http_code}' "$(sign GET "$P" "$BASE_B")" 2>"$f.err" || true)
    slice "$SRC/put.bin" "$a" $((b - a + 1)) >"$f.want"
    if [ "$code" = 206 ] && cmp -s "$f.body" "$f.want" \
        && tr -d '\r' <"$f.h" | grep -qi "^content-range: bytes $a-$b/$(stat -c %s "$SRC/put.bin")\$"; then
        pass "$name"
        costs "a ranged GET ($range)" "$S3A" "$S3B" "$RC"
    else
        { echo "Range: bytes=$range -> $code"; tr -d '\r' <"$f.h"; cat "$f.err"; } >"$f.ev"
        fail "$name" "want 206 with bytes $a-$b" "$f.ev"
    fi
    rm -f "$f.body" "$f.want"
}
SZ=$(stat -c %s "$SRC/put.bin")
range_check "GET from B, range across a part boundary (HTTP/1.1)" "5242000-10486000" 5242000 10486000 --http1.1
range_check "GET from B, range in the last part (HTTP/2)" "$((SZ - 100000))-$((SZ - 2))" $((SZ - 100000)) $((SZ - 2)) --http2
range_check "GET from B, suffix range (HTTP/1.1)" "-4096" $((SZ - 4096)) $((SZ - 1)) --http1.1
f=$(next)
code=$("${CURL[@]}" --http1.1 -H 'Range: bytes=0-9,100-109' -D "$f.h" -o "$f.body" -w '%{http_code}' "$(sign GET "$P" "$BASE_B")" 2>"$f.err" || true)
want1=$(slice "$SRC/put.bin" 0 10 | od -An -tx1 | tr -d ' \n')
want2=$(slice "$SRC/put.bin" 100 10 | od -An -tx1 | tr -d ' \n')
got=$(od -An -tx1 <"$f.body" | tr -d ' \n')
if [ "$code" = 206 ] && tr -d '\r' <"$f.h" | grep -qi '^content-type: multipart/byteranges' \
    && [[ "$got" == *"$want1"* ]] && [[ "$got" == *"$want2"* ]]; then
    pass "GET from B, multi-range: 206 multipart/byteranges with both ranges"
else
    { echo "-> $code"; tr -d '\r' <"$f.h"; } >"$f.ev"
    fail "GET from B, multi-range" "want 206 multipart/byteranges holding bytes 0-9 and 100-109" "$f.ev"
fi
f=$(next)
code=$("${CURL[@]}" --http1.1 -H "Range: bytes=$SZ-" -o /dev/null -w '%{http_code}' "$(sign GET "$P" "$BASE_B")" 2>"$f.err" || true)
if [ "$code" = 416 ]; then pass "GET from B, range past the end: 416"; else fail "GET from B, range past the end" "status $code, want 416" "$f.err"; fi
f=$(next)
timeout 90 "$PY" "$H3" --timeout 60 get "$(sign GET "$P" "$BASE_B")" --range 1000000-9999999 --out "$f.body" >"$f.json" 2>"$f.err" || true
slice "$SRC/put.bin" 1000000 9000000 >"$f.want"
if [ "$(j "$f.json" status)" = 206 ] && [ "$(j "$f.json" http_version)" = 3 ] && cmp -s "$f.body" "$f.want"; then
    pass "GET from B over HTTP/3 (pycurl), range 1000000-9999999"
else
    { cat "$f.json"; tail -n 5 "$f.err"; } >"$f.ev"
    fail "GET from B over HTTP/3 (pycurl), range 1000000-9999999" "want 206 over h3 with those bytes" "$f.ev"
fi
rm -f "$f.body" "$f.want"

# ---------------------------------------------------------------- the same key on A and B
P=cluster/race.bin
f=$(next)
UA=$(sign PUT "$P" "$BASE_A")
UB=$(sign PUT "$P" "$BASE_B")
"${CURL[@]}" --http1.1 -H 'Expect:' -T "$SRC/race1.bin" -o "$f.a" -w '%{http_code}' "$UA" >"$f.ca" 2>"$f.ea" &
ca=$!
"${CURL[@]}" --http1.1 -H 'Expect:' -T "$SRC/race2.bin" -o "$f.b" -w '%{http_code}' "$UB" >"$f.cb" 2>"$f.eb" &
cb=$!
wait "$ca" || true
wait "$cb" || true
codes="$(cat "$f.ca" 2>/dev/null) $(cat "$f.cb" 2>/dev/null)"
if [ "$codes" = "201 409" ] || [ "$codes" = "409 201" ]; then
    pass "the same key PUT on A and B at once: one 201, one 409 ($codes)"
else
    { echo "A: $(cat "$f.ca" 2>/dev/null) $(cat "$f.a" 2>/dev/null | head -c 300)"; echo "B: $(cat "$f.cb" 2>/dev/null) $(cat "$f.b" 2>/dev/null | head -c 300)"; cat "$f.ea" "$f.eb"; } >"$f.ev"
    fail "the same key PUT on A and B at once" "statuses '$codes', want one 201 and one 409" "$f.ev"
fi
winner="$SRC/race1.bin"
[ "$(cut -c1-3 "$f.cb" 2>/dev/null)" = 201 ] && winner="$SRC/race2.bin"
download_check "the stored race object is the 201's body, whole (from A)" "$BASE_A" "$P" "$winner"

# ---------------------------------------------------------------- both still up
for i in A B; do
    pid=$APID; [ "$i" = B ] && pid=$BPID
    if kill -0 "$pid" 2>/dev/null; then pass "instance $i still running"; else fail "instance $i still running" "it exited" "$WORK/$(echo "$i" | tr AB ab).log"; fi
done
echo "# peak RSS: A $(awk '/^VmHWM:/ {print $2 " kB"}' "/proc/$APID/status" 2>/dev/null), B $(awk '/^VmHWM:/ {print $2 " kB"}' "/proc/$BPID/status" 2>/dev/null)"

echo
echo "interop/cluster: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
