#!/usr/bin/env bash
# Interop check of xferd against third-party HTTP clients only:
#   - Debian's curl over HTTP/1.1 and HTTP/2 (TLS+TCP),
#   - libcurl with ngtcp2 through pycurl over HTTP/3 (QUIC/UDP), see h3_client.py.
# Usage: interop/http/run.sh /path/to/xferd
# Needs what interop/http/install.sh installs. Prints "PASS name" / "FAIL name: reason"
# lines and a final "N passed, M failed"; exits non-zero on any failure.
# Env: PYTHON (default python3), KEEP_WORK=1 keeps the temp dir for inspection.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid, pass/fail, measure_transfer

if [ "$#" -ne 1 ]; then
    echo "usage: $0 /path/to/xferd" >&2
    exit 64
fi
XFERD=$(readlink -f "$1")
[ -x "$XFERD" ] || { echo "not executable: $1" >&2; exit 64; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
H3="$HERE/h3_client.py"
SIGN_PY="$HERE/v3sign.py"
SECRET="interop-secret-$RANDOM$RANDOM"
CURL=(curl -sS -k --connect-timeout 5 --max-time 60)

for tool in curl sha256sum timeout "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run interop/http/install.sh" >&2; exit 69; }
done
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-interop.XXXXXX")
XPID=""
cleanup() {
    local rc=$?
    stop_pid "$XPID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



PORT=$(free_port)
BASE="https://127.0.0.1:$PORT"
CONF="$WORK/xferd.toml"
mkdir -p "$WORK/data" "$WORK/out"
cat >"$CONF" <<EOF
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/data"
max_upload_size = "2GB"

[security]
secret = "$SECRET"
EOF

"$XFERD" serve --config "$CONF" >"$WORK/xferd.log" 2>&1 &
XPID=$!

# Bounded wait for health over TCP.
healthy=0
for _ in $(seq 1 150); do
    if ! kill -0 "$XPID" 2>/dev/null; then break; fi
    code=$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/health" || true)
    if [ "$code" = 200 ]; then healthy=1; break; fi
    sleep 0.2
done
if [ "$healthy" != 1 ]; then
    fail "startup" "xferd did not answer 200 on GET $BASE/health within 30 s (log below)" "$WORK/xferd.log"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi
pass "startup: GET /health -> 200"

# ---------------------------------------------------------------- signing
# Prefer `xferd sign`; cross-check it against an independent HMAC. Fall back to Python.
SIGNER=python
if "$XFERD" sign --help >/dev/null 2>&1; then
    SIGNER=xferd
fi
sign_put() { # path -> URL
    local path=$1 size=$2 url
    if [ "$SIGNER" = xferd ]; then
        url=$(timeout 10 "$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$path" \
            --size "$size" --expires 3600) || return 1
    else
        url=$("$PY" "$SIGN_PY" sign --secret "$SECRET" --base "$BASE" --method PUT --path "$path") || return 1
    fi
    printf '%s\n' "$url"
}
if [ "$SIGNER" = xferd ]; then
    u=$(sign_put "sig/check é.bin" 5 2>"$WORK/sign.err" || true)
    if [[ "$u" != "$BASE/"* ]]; then
        fail "xferd sign v3 URL shape" "expected $BASE/...?v3=..&expires=.., got '$u'" "$WORK/sign.err"
        SIGNER=python
    elif msg=$("$PY" "$SIGN_PY" check --secret "$SECRET" --method PUT "$u"); then
        pass "xferd sign v3 URL matches an independent HMAC-SHA256"
    else
        fail "xferd sign v3 URL matches an independent HMAC-SHA256" "$msg ($u)"
        SIGNER=python
    fi
    [ "$SIGNER" = xferd ] || echo "# note: signing the remaining URLs in Python"
else
    echo "# note: '$XFERD sign' unavailable; signing v3 URLs in Python"
fi

# ---------------------------------------------------------------- test data
SIZE=$((1024 * 1024 + 4321))
ORIG="$WORK/orig.bin"
OTHER="$WORK/other.bin"
head -c "$SIZE" /dev/urandom >"$ORIG"
head -c "$SIZE" /dev/urandom >"$OTHER"
ORIG_SHA=$(sha256sum "$ORIG" | cut -d' ' -f1)
dd if="$ORIG" of="$WORK/expect_range.bin" iflag=skip_bytes,count_bytes skip=100 count=100 status=none
RANGE_SHA=$(sha256sum "$WORK/expect_range.bin" | cut -d' ' -f1)
sha() { [ -f "$1" ] || { echo none; return 0; }; sha256sum "$1" | cut -d' ' -f1; }
hdr() { # file name -> value of the last such header (case-insensitive), CR stripped
    [ -f "$1" ] || return 0
    tr -d '\r' <"$1" | awk -v n="$(printf '%s' "$2" | tr 'A-Z' 'a-z')" -F': *' \
        'tolower($1)==n { sub(/^[^:]*: */, ""); v=$0 } END { print v }'
}
# Describe a curl request for FAIL evidence.
evidence() { # file method url curl-http-flag hdrfile bodyfile
    {
        echo "request: $2 $3 (curl $4)"
        echo "response headers:"
        tr -d '\r' <"$5" 2>/dev/null || true
        echo "response body (first 400 bytes, non-printable shown as .):"
        head -c 400 "$6" 2>/dev/null | LC_ALL=C tr -c '[:print:]\n' '.' || true
        echo
        if [ -s "$WORK/out/err" ]; then echo "curl stderr:"; head -c 400 "$WORK/out/err"; fi
    } >"$1"
}

# Flip the last hex digit of the MAC parameter of a signed URL.
tamper_url() {
    "$PY" - "$1" <<'EOF'
import sys, urllib.parse as up
u = up.urlsplit(sys.argv[1])
out = []
for k, v in up.parse_qsl(u.query):
    if k in ("v3", "v", "v2", "token"):
        v = v[:-1] + ("0" if v[-1] != "0" else "1")
    out.append((k, v))
print(up.urlunsplit((u.scheme, u.netloc, u.path, up.urlencode(out), u.fragment)))
EOF
}

# ---------------------------------------------------------------- curl: HTTP/1.1 and HTTP/2
curl_suite() {
    local label=$1 flag=$2 want_ver=$3
    local name="interop/$label/name.bin" url tampered out code ver line
    local H="$WORK/out/$label.h" B="$WORK/out/$label.b" E="$WORK/out/$label.ev"

    if ! url=$(sign_put "$name" "$SIZE"); then
        fail "$label signing" "could not sign PUT for $name"
        return
    fi

    # 1. signed PUT -> 201
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -X PUT -T "$ORIG" -D "$H" -o "$B" -w '%{http_code} %{http_version}' "$url" 2>"$WORK/out/err" || true)
    code=${line%% *}; ver=${line#* }
    evidence "$E" PUT "$url" "$flag" "$H" "$B"
    if [ "$code" = 201 ] && [ "$ver" = "$want_ver" ]; then
        pass "$label PUT signed -> 201"
    else
        fail "$label PUT signed -> 201" "got status '$code' over HTTP/$ver $(head -c 200 "$WORK/out/err")" "$E"
    fi
    local altsvc
    altsvc=$(hdr "$H" alt-svc)
    if [[ "$altsvc" == *"h3=\":$PORT\""* ]]; then
        pass "$label PUT response has Alt-Svc h3=\":$PORT\""
    else
        fail "$label PUT response has Alt-Svc h3=\":$PORT\"" "Alt-Svc is '$altsvc'" "$E"
    fi

    local get_url=${url%%\?*}

    # 2. full GET -> 200, same bytes
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -D "$H" -o "$B" -w '%{http_code} %{http_version}' "$get_url" 2>"$WORK/out/err" || true)
    code=${line%% *}; ver=${line#* }
    evidence "$E" GET "$get_url" "$flag" "$H" "$B"
    if [ "$code" = 200 ] && [ "$ver" = "$want_ver" ] && [ "$(sha "$B")" = "$ORIG_SHA" ]; then
        pass "$label GET full -> 200, SHA-256 matches"
    else
        fail "$label GET full -> 200, SHA-256 matches" "status '$code' HTTP/$ver, $(stat -c %s "$B" 2>/dev/null || echo 0) bytes, sha256 $(sha "$B" 2>/dev/null) want $ORIG_SHA $(head -c 200 "$WORK/out/err")" "$E"
    fi
    altsvc=$(hdr "$H" alt-svc)
    if [[ "$altsvc" == *"h3=\":$PORT\""* ]]; then
        pass "$label GET response has Alt-Svc h3=\":$PORT\""
    else
        fail "$label GET response has Alt-Svc h3=\":$PORT\"" "Alt-Svc is '$altsvc'" "$E"
    fi

    # 3. ranged GET -> 206 with bytes 100..199
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -r 100-199 -D "$H" -o "$B" -w '%{http_code} %{http_version}' "$get_url" 2>"$WORK/out/err" || true)
    code=${line%% *}; ver=${line#* }
    evidence "$E" "GET (Range: bytes=100-199)" "$get_url" "$flag" "$H" "$B"
    local cr
    cr=$(hdr "$H" content-range)
    if [ "$code" = 206 ] && [ "$(sha "$B")" = "$RANGE_SHA" ] && [ "$cr" = "bytes 100-199/$SIZE" ]; then
        pass "$label GET -r 100-199 -> 206, bytes match"
    else
        fail "$label GET -r 100-199 -> 206, bytes match" "status '$code', Content-Range '$cr', $(stat -c %s "$B" 2>/dev/null || echo 0) bytes, match=$([ "$(sha "$B")" = "$RANGE_SHA" ] && echo yes || echo no)" "$E"
    fi

    # 4. HEAD -> 200, Content-Length, no body
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -I -D "$H" -o "$B" -w '%{http_code} %{http_version} %{size_download}' "$get_url" 2>"$WORK/out/err" || true)
    read -r code ver out <<<"$line"
    evidence "$E" HEAD "$get_url" "$flag" "$H" "$B"
    local cl
    cl=$(hdr "$H" content-length)
    if [ "$code" = 200 ] && [ "$cl" = "$SIZE" ] && [ "${out:-1}" = 0 ]; then
        pass "$label HEAD -> 200, Content-Length $SIZE"
    else
        fail "$label HEAD -> 200, Content-Length $SIZE" "status '$code', Content-Length '$cl', body bytes '${out:-?}'" "$E"
    fi

    # 5. second PUT to the same URL (different bytes) -> 409, original kept
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -X PUT -T "$OTHER" -D "$H" -o "$B" -w '%{http_code} %{http_version}' "$url" 2>"$WORK/out/err" || true)
    code=${line%% *}
    evidence "$E" "PUT (again)" "$url" "$flag" "$H" "$B"
    if [ "$code" = 409 ]; then
        pass "$label PUT to an existing path -> 409"
    else
        fail "$label PUT to an existing path -> 409" "got status '$code' $(head -c 200 "$WORK/out/err")" "$E"
    fi
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -o "$B" -w '%{http_code}' "$get_url" 2>/dev/null || true)
    if [ "$line" = 200 ] && [ "$(sha "$B")" = "$ORIG_SHA" ]; then
        pass "$label after 409 the stored file is unchanged"
    else
        fail "$label after 409 the stored file is unchanged" "GET $get_url -> '$line', sha256 $(sha "$B")"
    fi

    # 6. tampered signature -> 403, nothing stored
    local name2="interop/$label/tampered.bin" url2
    url2=$(sign_put "$name2" "$SIZE") || { fail "$label signing" "could not sign PUT for $name2"; return; }
    tampered=$(tamper_url "$url2")
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -X PUT -T "$ORIG" -D "$H" -o "$B" -w '%{http_code}' "$tampered" 2>"$WORK/out/err" || true)
    evidence "$E" "PUT (tampered MAC)" "$tampered" "$flag" "$H" "$B"
    if [ "$line" = 403 ]; then
        pass "$label PUT with tampered signature -> 403"
    else
        fail "$label PUT with tampered signature -> 403" "got status '$line' $(head -c 200 "$WORK/out/err")" "$E"
    fi
    local get2="${tampered%%\?*}"
    rm -f "$H" "$B"
    line=$("${CURL[@]}" "$flag" -o /dev/null -w '%{http_code}' "$get2" 2>/dev/null || true)
    if [ "$line" = 404 ]; then
        pass "$label after 403 nothing was stored (GET -> 404)"
    else
        fail "$label after 403 nothing was stored (GET -> 404)" "GET $get2 -> '$line'"
    fi
}

curl_suite h1 --http1.1 1.1
curl_suite h2 --http2 2

# A name that needs percent-encoding (space, UTF-8): the MAC is over the decoded path.
ENC_NAME="interop/enc/My Photo é.bin"
if ENC_URL=$(sign_put "$ENC_NAME" "$SIZE"); then
    H="$WORK/out/enc.h"; B="$WORK/out/enc.b"; E="$WORK/out/enc.ev"
    rm -f "$H" "$B"
    code=$("${CURL[@]}" --http1.1 -T "$ORIG" -D "$H" -o "$B" -w '%{http_code}' "$ENC_URL" 2>"$WORK/out/err" || true)
    evidence "$E" PUT "$ENC_URL" --http1.1 "$H" "$B"
    if [ "$code" = 201 ]; then
        pass "h1 PUT percent-encoded UTF-8 name -> 201"
    else
        fail "h1 PUT percent-encoded UTF-8 name -> 201" "got status '$code' $(head -c 200 "$WORK/out/err")" "$E"
    fi
    rm -f "$H" "$B"
    code=$("${CURL[@]}" --http1.1 -D "$H" -o "$B" -w '%{http_code}' "${ENC_URL%%\?*}" 2>"$WORK/out/err" || true)
    evidence "$E" GET "${ENC_URL%%\?*}" --http1.1 "$H" "$B"
    if [ "$code" = 200 ] && [ "$(sha "$B")" = "$ORIG_SHA" ]; then
        pass "h1 GET percent-encoded UTF-8 name -> 200, SHA-256 matches"
    else
        fail "h1 GET percent-encoded UTF-8 name -> 200, SHA-256 matches" "got status '$code', sha256 $(sha "$B")" "$E"
    fi
else
    fail "signing a percent-encoded name" "could not sign PUT for $ENC_NAME"
fi

# ---------------------------------------------------------------- pycurl: HTTP/3
j() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v.get(k, "") if isinstance(v, dict) else ""
print(v)' "$1" "$2" 2>/dev/null || true; }
h3_evidence() { # jsonfile -> evidence file
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("request: %s %s (pycurl HTTP/3 only)" % (d.get("method"), d.get("url")))
print("status %s over HTTP/%s, %s bytes; error: %s" % (d.get("status"), d.get("http_version"), d.get("bytes"), d.get("error")))
for k, v in sorted(d.get("headers", {}).items()): print("%s: %s" % (k, v))
if d.get("response_body"): print("body: " + d["response_body"][:400])' "$1" >"$1.ev" 2>/dev/null || cp "$1" "$1.ev"
}
h3() { # name json-out args... ; returns h3_client.py's exit code
    local out=$1; shift
    timeout 90 "$PY" "$H3" --timeout 60 "$@" >"$out" 2>"$out.err" || return $?
}

NAME3="interop/h3/name.bin"
if URL3=$(sign_put "$NAME3" "$SIZE"); then
    GET3=${URL3%%\?*}
    J="$WORK/out/h3"

    rc=0; h3 "$J.put.json" put "$URL3" "$ORIG" || rc=$?
    [ -s "$J.put.json" ] || echo '{"error": "no output"}' >"$J.put.json"
    h3_evidence "$J.put.json"
    if [ "$rc" = 0 ] && [ "$(j "$J.put.json" status)" = 201 ]; then
        pass "h3 PUT signed -> 201 (HTTP/3)"
    else
        fail "h3 PUT signed -> 201 (HTTP/3)" "exit $rc, status '$(j "$J.put.json" status)', HTTP/$(j "$J.put.json" http_version), $(j "$J.put.json" error) $(head -c 200 "$J.put.json.err")" "$J.put.json.ev"
    fi

    rc=0; h3 "$J.get.json" get "$GET3" --sha256 || rc=$?
    [ -s "$J.get.json" ] || echo '{"error": "no output"}' >"$J.get.json"
    h3_evidence "$J.get.json"
    if [ "$rc" = 0 ] && [ "$(j "$J.get.json" status)" = 200 ] && [ "$(j "$J.get.json" sha256)" = "$ORIG_SHA" ]; then
        pass "h3 GET full -> 200, SHA-256 matches (HTTP/3)"
    else
        fail "h3 GET full -> 200, SHA-256 matches (HTTP/3)" "exit $rc, status '$(j "$J.get.json" status)', HTTP/$(j "$J.get.json" http_version), $(j "$J.get.json" bytes) bytes, sha256 $(j "$J.get.json" sha256) want $ORIG_SHA $(j "$J.get.json" error)" "$J.get.json.ev"
    fi

    rc=0; h3 "$J.range.json" get "$GET3" --range 100-199 --out "$WORK/out/h3.range" || rc=$?
    [ -s "$J.range.json" ] || echo '{"error": "no output"}' >"$J.range.json"
    h3_evidence "$J.range.json"
    cr=$(j "$J.range.json" headers.content-range)
    if [ "$rc" = 0 ] && [ "$(j "$J.range.json" status)" = 206 ] && [ -f "$WORK/out/h3.range" ] \
        && [ "$(sha "$WORK/out/h3.range")" = "$RANGE_SHA" ] && [ "$cr" = "bytes 100-199/$SIZE" ]; then
        pass "h3 GET Range 100-199 -> 206, bytes match (HTTP/3)"
    else
        fail "h3 GET Range 100-199 -> 206, bytes match (HTTP/3)" "exit $rc, status '$(j "$J.range.json" status)', HTTP/$(j "$J.range.json" http_version), Content-Range '$cr' $(j "$J.range.json" error)" "$J.range.json.ev"
    fi

    rc=0; h3 "$J.head.json" head "$GET3" || rc=$?
    [ -s "$J.head.json" ] || echo '{"error": "no output"}' >"$J.head.json"
    h3_evidence "$J.head.json"
    if [ "$rc" = 0 ] && [ "$(j "$J.head.json" status)" = 200 ] && [ "$(j "$J.head.json" headers.content-length)" = "$SIZE" ]; then
        pass "h3 HEAD -> 200, Content-Length $SIZE (HTTP/3)"
    else
        fail "h3 HEAD -> 200, Content-Length $SIZE (HTTP/3)" "exit $rc, status '$(j "$J.head.json" status)', HTTP/$(j "$J.head.json" http_version), Content-Length '$(j "$J.head.json" headers.content-length)' $(j "$J.head.json" error)" "$J.head.json.ev"
    fi

    # 0-RTT (on by default): the HEAD again on 5 fresh connections, each resuming the TLS
    # session of the one before and sending its request in early data. Each must be answered
    # (with 0-RTT on, an h3 request used to hang now and then until libcurl's timeout).
    rc=0; h3 "$J.head0.json" --resume 5 head "$GET3" || rc=$?
    [ -s "$J.head0.json" ] || echo '{"error": "no output"}' >"$J.head0.json"
    if "$PY" -c 'import json,sys
rs=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if len(rs)==6 and all(r.get("status")==200 for r in rs) and sum(r.get("early_data",0)>0 for r in rs)>=2 else 1)' "$J.head0.json" 2>/dev/null && [ "$rc" = 0 ]; then
        pass "h3 HEAD on 5 resumed connections, sent in 0-RTT early data -> 200 each (HTTP/3)"
    else
        fail "h3 HEAD on 5 resumed connections, sent in 0-RTT early data -> 200 each (HTTP/3)" "exit $rc: $(cut -c1-200 "$J.head0.json" | tr '\n' ' ')" "$J.head0.json"
    fi

    rc=0; h3 "$J.put2.json" put "$URL3" "$OTHER" || rc=$?
    [ -s "$J.put2.json" ] || echo '{"error": "no output"}' >"$J.put2.json"
    h3_evidence "$J.put2.json"
    if [ "$rc" = 0 ] && [ "$(j "$J.put2.json" status)" = 409 ]; then
        pass "h3 PUT to an existing path -> 409 (HTTP/3)"
    else
        fail "h3 PUT to an existing path -> 409 (HTTP/3)" "exit $rc, status '$(j "$J.put2.json" status)', HTTP/$(j "$J.put2.json" http_version) $(j "$J.put2.json" error)" "$J.put2.json.ev"
    fi

    if URL3T=$(sign_put "interop/h3/tampered.bin" "$SIZE"); then
        URL3T=$(tamper_url "$URL3T")
        rc=0; h3 "$J.tamper.json" put "$URL3T" "$ORIG" || rc=$?
        [ -s "$J.tamper.json" ] || echo '{"error": "no output"}' >"$J.tamper.json"
        h3_evidence "$J.tamper.json"
        if [ "$rc" = 0 ] && [ "$(j "$J.tamper.json" status)" = 403 ]; then
            pass "h3 PUT with tampered signature -> 403 (HTTP/3)"
        else
            fail "h3 PUT with tampered signature -> 403 (HTTP/3)" "exit $rc, status '$(j "$J.tamper.json" status)', HTTP/$(j "$J.tamper.json" http_version) $(j "$J.tamper.json" error)" "$J.tamper.json.ev"
        fi
    fi
else
    fail "h3 signing" "could not sign PUT for $NAME3"
fi

if ! kill -0 "$XPID" 2>/dev/null; then
    fail "xferd still running at the end" "the process exited (log below)" "$WORK/xferd.log"
fi
if grep -q 'panicked' "$WORK/xferd.log"; then
    fail "no panic in xferd's log" "log has a panic" "$WORK/xferd.log"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
