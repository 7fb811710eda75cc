#!/usr/bin/env bash
# Interop check of xferd's resumable uploads (tus 1.0.0 and the IETF "Resumable Uploads for
# HTTP" draft, interop version 6) against third-party clients only:
#   a. tuspy: a 30 MB upload in 4 MiB chunks (with Upload-Checksum sha1) whose client dies
#      (SIGKILL) after 2 chunks; a new tuspy process resumes it from its URL storage;
#   b. tus-js-client (Node): parallelUploads 4 (concatenation); an upload aborted mid-PATCH
#      and resumed in a new process with findPreviousUploads + resumeFromPreviousUpload;
#      its IETF draft mode (protocol ietf-draft-05, Upload-Draft-Interop-Version 6);
#   c. the IETF draft flow through libcurl (pycurl) over HTTP/1.1 and HTTP/2: creation
#      with Upload-Complete ?0, an append cut mid-body (a raw TLS socket over HTTP/1.1),
#      HEAD, 409 + problem details at a wrong offset, the rest with ?1; one-shot PUT;
#      DELETE. A tus flow with a PATCH cut mid-body over HTTP/1.1 and HTTP/2, and tus
#      protocol details through libcurl (OPTIONS, checksums, 409/412/415, deferred length,
#      concatenation by hand, DELETE);
#   d. crash: 20 concurrent tus uploads (http.client), xferd SIGKILLed when half of the
#      bytes are acknowledged, restarted on the same config, every upload resumed from its
#      HEAD offset, every file checked by SHA-256;
#   e. HTTP/3 (pycurl, CURL_HTTP_VERSION_3ONLY): the IETF draft flow and a tus flow, each
#      with a request cut mid-body (stream reset).
# Every upload is checked by GET of its target path and SHA-256. Also: signed PUTs to
# target paths under files/ and resumable/ are stored (the upload endpoints must not
# shadow storage paths). Test files live under rs/.
#
# Usage: interop/resumable/run.sh /path/to/xferd
# Needs interop/resumable/install.sh (tuspy, tus-js-client; it runs interop/http/install.sh
# for curl and pycurl with HTTP/3 when they are missing). Prints "PASS name" / "FAIL name: reason" lines and a final
# "N passed, M failed"; exits non-zero on any failure.
# Env: PYTHON (default python3), NODE (default node), KEEP_WORK=1 keeps the temp dir.
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
NODE=${NODE:-node}
TUSPY="$HERE/tus_py.py"
TUSJS="$HERE/node/tus_js.mjs"
PYC="$HERE/pycurl_resumable.py"
CRASH="$HERE/crash.py"
SECRET="interop-secret-$RANDOM$RANDOM"

for tool in curl sha256sum timeout "$PY" "$NODE"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run interop/resumable/install.sh" >&2; exit 69; }
done
"$PY" -c 'import tusclient' 2>/dev/null || { echo "tuspy missing: run interop/resumable/install.sh" >&2; exit 69; }
[ -d "$HERE/node/node_modules/tus-js-client" ] \
    || { echo "tus-js-client missing: run interop/resumable/install.sh" >&2; exit 69; }
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-resumable.XXXXXX")
XPID=""
stop_xferd() {
    if [ -n "$XPID" ] && kill -0 "$XPID" 2>/dev/null; then
        kill -TERM "$XPID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$XPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$XPID" 2>/dev/null || true
    fi
    [ -z "$XPID" ] || wait "$XPID" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop_xferd
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run a helper that prints its own PASS/FAIL lines; count them. A helper that dies
# without printing a FAIL is a failure of its own.
run_checks() { # name timeout-seconds command...
    local name=$1 secs=$2 rc=0 out="$WORK/out/checks.$RANDOM"
    shift 2
    timeout "$secs" "$@" >"$out" 2>"$out.err" || rc=$?
    cat "$out"
    local p f
    p=$(grep -c '^PASS ' "$out" || true)
    f=$(grep -c '^FAIL ' "$out" || true)
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        fail "$name ran to the end" "exit $rc$([ "$rc" = 124 ] && echo " (timed out after $secs s)")" "$out.err"
    fi
}


PORT=$(free_port)
BASE="https://127.0.0.1:$PORT"
CONF="$WORK/xferd.toml"
mkdir -p "$WORK/data" "$WORK/state" "$WORK/out" "$WORK/files"
cat >"$CONF" <<EOF
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/data"
state_path = "$WORK/state"
max_upload_size = "2GB"

[security]
secret = "$SECRET"
EOF
CA="$WORK/state/cert.pem"

start_xferd() { # log file -> 0 when healthy within 30 s
    "$XFERD" serve --config "$CONF" >>"$1" 2>&1 &
    XPID=$!
    # The crash test SIGKILLs it: no job notice ("Killed") from this shell for that.
    disown "$XPID" 2>/dev/null || true
    for _ in $(seq 1 150); do
        kill -0 "$XPID" 2>/dev/null || return 1
        if [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/health" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}
if ! start_xferd "$WORK/xferd.log"; then
    fail "startup" "xferd did not answer 200 on GET $BASE/health within 30 s (log below)" "$WORK/xferd.log"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi
pass "startup: GET /health -> 200"
if [ ! -s "$CA" ]; then
    fail "self-signed certificate in state_path" "$CA missing; clients run without verification"
    CA=""
fi
# The clients verify xferd's self-signed certificate (it has IP SAN 127.0.0.1).
if [ -n "$CA" ]; then
    export REQUESTS_CA_BUNDLE="$CA" NODE_EXTRA_CA_CERTS="$CA"
    CURL=(curl -sS --cacert "$CA" --connect-timeout 5 --max-time 120)
    PYCA=(--cacert "$CA")
    TUSPY_TLS=()
else
    CURL=(curl -sS -k --connect-timeout 5 --max-time 120)
    PYCA=()
    TUSPY_TLS=(--insecure)
    export NODE_TLS_REJECT_UNAUTHORIZED=0
fi

sign() { # path -> signed v3 PUT URL
    timeout 10 "$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$1" --expires 1h
}
sha() { [ -f "$1" ] || { echo none; return 0; }; sha256sum "$1" | cut -d' ' -f1; }
hdr() { # file name -> value of the last such header (case-insensitive), CR stripped
    [ -f "$1" ] || return 0
    tr -d '\r' <"$1" | awk -v n="$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" -F': *' \
        'tolower($1)==n { sub(/^[^:]*: */, ""); v=$0 } END { print v }'
}
j() { "$PY" -c 'import json,sys
try: d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception: d={}
v=d
for k in sys.argv[2].split("."): v=v.get(k, "") if isinstance(v, dict) else ""
print(json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else v)' "$1" "$2" 2>/dev/null || true; }
# GET the target path of a signed URL; compare with a file. Sets GOT_CODE, GOT_SHA.
get_check() { # signed-url file name
    local url=${1%%\?*} b="$WORK/out/get.$RANDOM"
    GOT_CODE=$("${CURL[@]}" -o "$b" -D "$b.h" -w '%{http_code}' "$url" 2>"$b.err" || true)
    GOT_SHA=$(sha "$b")
    if [ "$GOT_CODE" = 200 ] && [ "$GOT_SHA" = "$(sha "$2")" ]; then
        pass "$3"
    else
        { echo "request: GET $url"; tr -d '\r' <"$b.h" 2>/dev/null; head -c 300 "$b" 2>/dev/null | LC_ALL=C tr -c '[:print:]\n' '.'; echo; cat "$b.err"; } >"$b.ev"
        fail "$3" "GET -> '$GOT_CODE', $(stat -c %s "$b" 2>/dev/null || echo 0) bytes, sha256 $GOT_SHA want $(sha "$2")" "$b.ev"
    fi
    rm -f "$b"
}
json_ev() { # json-file -> evidence file path (the client's JSON report, pretty)
    "$PY" -c 'import json,sys
for l in open(sys.argv[1]).read().splitlines():
    try: print(json.dumps(json.loads(l), indent=1)[:3000])
    except Exception: print(l)' "$1" >"$1.ev" 2>/dev/null || cp "$1" "$1.ev"
    [ ! -s "$1.err" ] || { echo "stderr:"; tail -n 15 "$1.err"; } >>"$1.ev"
    echo "$1.ev"
}

# ---------------------------------------------------------------- preflight: does it speak tus?
H="$WORK/out/options.h"
code=$("${CURL[@]}" -X OPTIONS -D "$H" -o /dev/null -w '%{http_code}' "$BASE/files/" 2>/dev/null || true)
if [ -n "$(hdr "$H" tus-version)" ]; then
    pass "OPTIONS /files/ -> $code with Tus-Version $(hdr "$H" tus-version), Tus-Extension $(hdr "$H" tus-extension)"
else
    { echo "request: OPTIONS $BASE/files/"; tr -d '\r' <"$H"; } >"$H.ev"
    fail "OPTIONS /files/ answers Tus-Version" "status '$code', no Tus-Version header" "$H.ev"
fi

# ---------------------------------------------------------------- a. tuspy, client killed, resumed
FA="$WORK/files/tuspy-30M.bin"
head -c $((30 * 1024 * 1024 + 12345)) /dev/urandom >"$FA"
CH=$((4 * 1024 * 1024))
if URL=$(sign "rs/tuspy/data 30M.bin"); then
    J="$WORK/out/a1.json"
    # In an inner shell, so that its "Killed" notice goes to the .err file.
    rc=0; bash -c 'timeout 120 "$@"; exit $?' _ "$PY" "$TUSPY" upload "$URL" "$FA" "${TUSPY_TLS[@]}" \
        --chunk-size $CH --checksum --metadata "filename=data 30M.bin" --metadata filetype=application/octet-stream \
        --store "$WORK/out/tuspy-urls.json" --crash-after-chunks 2 >"$J" 2>"$J.err" || rc=$?
    stored=$(j "$J" url)
    if [ "$rc" = 137 ] && [ "$(j "$J" offset)" = $((2 * CH)) ] && [[ "$stored" == "$BASE/files/"* ]]; then
        pass "tuspy: create + 2 PATCHes of 4 MiB with Upload-Checksum sha1, then the client is SIGKILLed"
    else
        fail "tuspy: create + 2 PATCHes of 4 MiB with Upload-Checksum sha1, then the client is SIGKILLed" \
            "exit $rc (want 137), offset '$(j "$J" offset)', url '$stored', error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    if [[ "$stored" == http* ]]; then
        H="$WORK/out/a.head"
        code=$("${CURL[@]}" -I -H 'Tus-Resumable: 1.0.0' -D "$H" -o /dev/null -w '%{http_code}' "$stored" 2>/dev/null || true)
        { echo "request: HEAD $stored (Tus-Resumable: 1.0.0)"; tr -d '\r' <"$H"; } >"$H.ev"
        meta=$(hdr "$H" upload-metadata)
        if [[ "$code" =~ ^20[04]$ ]] && [ "$(hdr "$H" upload-offset)" = $((2 * CH)) ] \
            && [ "$(hdr "$H" upload-length)" = "$(stat -c %s "$FA")" ] \
            && [[ "$meta" == *"filename $(printf 'data 30M.bin' | base64)"* ]]; then
            pass "tus HEAD after the client died -> Upload-Offset $((2 * CH)), Upload-Length, Upload-Metadata"
        else
            fail "tus HEAD after the client died -> Upload-Offset $((2 * CH)), Upload-Length, Upload-Metadata" \
                "status '$code', Upload-Offset '$(hdr "$H" upload-offset)', Upload-Metadata '$meta'" "$H.ev"
        fi
    fi
    J="$WORK/out/a2.json"
    rc=0; timeout 120 "$PY" "$TUSPY" upload "$URL" "$FA" "${TUSPY_TLS[@]}" --chunk-size $CH --checksum \
        --metadata "filename=data 30M.bin" --metadata filetype=application/octet-stream \
        --store "$WORK/out/tuspy-urls.json" --expect-offset $((2 * CH)) >"$J" 2>"$J.err" || rc=$?
    if [ "$rc" = 0 ] && [ "$(j "$J" resumed)" = true ] && [ "$(j "$J" url)" = "$stored" ] \
        && [ "$(j "$J" offset)" = "$(stat -c %s "$FA")" ]; then
        pass "tuspy: a new process resumes from its URL storage at offset $((2 * CH)) and completes"
    else
        fail "tuspy: a new process resumes from its URL storage at offset $((2 * CH)) and completes" \
            "exit $rc, resumed '$(j "$J" resumed)', url '$(j "$J" url)' (stored '$stored'), start '$(j "$J" start_offset)', offset '$(j "$J" offset)', error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    get_check "$URL" "$FA" "tuspy resumed upload: GET target path -> 200, SHA-256 matches"
else
    fail "signing" "xferd sign failed"
fi

# ---------------------------------------------------------------- b. tus-js-client
FB="$WORK/files/js-20M.bin"
head -c $((20 * 1024 * 1024 + 777)) /dev/urandom >"$FB"
if URL=$(sign "rs/js/parallel.bin"); then
    J="$WORK/out/b1.json"
    rc=0; timeout 120 "$NODE" "$TUSJS" upload "$URL" "$FB" --parallel 4 >"$J" 2>"$J.err" || rc=$?
    posts=$("$PY" -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(sum(1 for r in d["requests"] if r.startswith("POST")))' "$J" 2>/dev/null || echo 0)
    if [ "$rc" = 0 ] && [ "$(j "$J" ok)" = true ] && [ "$posts" = 5 ]; then
        pass "tus-js-client parallelUploads 4: 4 partial uploads + final concatenation"
    else
        fail "tus-js-client parallelUploads 4: 4 partial uploads + final concatenation" \
            "exit $rc, ok '$(j "$J" ok)', POSTs $posts (want 5), status '$(j "$J" status)', error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    get_check "$URL" "$FB" "tus-js-client parallel upload: GET target path -> 200, SHA-256 matches"
fi
if URL=$(sign "rs/js/aborted.bin"); then
    J="$WORK/out/b2.json"
    rc=0; timeout 120 "$NODE" "$TUSJS" abort "$URL" "$FB" --chunk-size $((2 * 1024 * 1024)) --abort-at 0.45 \
        --store "$WORK/out/js-urls.json" >"$J" 2>"$J.err" || rc=$?
    aborted_url=$(j "$J" url)
    acked=$(j "$J" acked_at_abort)
    if [ "$rc" = 0 ] && [ "$(j "$J" ok)" = true ] && [[ "$aborted_url" == "$BASE/files/"* ]]; then
        pass "tus-js-client: upload in 2 MiB PATCHes, upload.abort() mid-PATCH at $(j "$J" aborted_at) bytes sent"
    else
        fail "tus-js-client: upload in 2 MiB PATCHes, upload.abort() mid-PATCH" \
            "exit $rc, ok '$(j "$J" ok)', url '$aborted_url', error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    J="$WORK/out/b3.json"
    rc=0; timeout 120 "$NODE" "$TUSJS" resume "$URL" "$FB" --chunk-size $((2 * 1024 * 1024)) \
        --store "$WORK/out/js-urls.json" >"$J" 2>"$J.err" || rc=$?
    ho=$(j "$J" head_offset)
    if [ "$rc" = 0 ] && [ "$(j "$J" ok)" = true ] && [ "$(j "$J" url)" = "$aborted_url" ] \
        && [[ "$ho" =~ ^[0-9]+$ ]] && [ "$ho" -ge "${acked:-0}" ]; then
        pass "tus-js-client: new process, findPreviousUploads + resumeFromPreviousUpload from HEAD offset $ho (acknowledged $acked), completes"
    else
        fail "tus-js-client: new process, findPreviousUploads + resumeFromPreviousUpload completes" \
            "exit $rc, ok '$(j "$J" ok)', url '$(j "$J" url)' (aborted '$aborted_url'), HEAD offset '$ho' (acknowledged '$acked'), error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    get_check "$URL" "$FB" "tus-js-client aborted+resumed upload: GET target path -> 200, SHA-256 matches"
fi
if URL=$(sign "rs/js/ietf.bin"); then
    J="$WORK/out/b4.json"
    rc=0; timeout 120 "$NODE" "$TUSJS" upload "$URL" "$FB" --protocol ietf-draft-05 --chunk-size $((4 * 1024 * 1024)) \
        >"$J" 2>"$J.err" || rc=$?
    if [ "$rc" = 0 ] && [ "$(j "$J" ok)" = true ] && [[ "$(j "$J" url)" == "$BASE/resumable/"* ]]; then
        pass "tus-js-client IETF draft mode (Upload-Draft-Interop-Version 6), 4 MiB appends"
    else
        fail "tus-js-client IETF draft mode (Upload-Draft-Interop-Version 6), 4 MiB appends" \
            "exit $rc, ok '$(j "$J" ok)', url '$(j "$J" url)', status '$(j "$J" status)', error '$(j "$J" error)'" "$(json_ev "$J")"
    fi
    get_check "$URL" "$FB" "tus-js-client IETF upload: GET target path -> 200, SHA-256 matches"
fi

# ---------------------------------------------------------------- c. IETF draft through libcurl, tus details
FC="$WORK/files/ietf-6M.bin"
head -c $((6 * 1024 * 1024 + 99)) /dev/urandom >"$FC"
for v in 1.1 2; do
    l=h${v%%.*}
    if U1=$(sign "rs/ietf/$l/main.bin") && U2=$(sign "rs/ietf/$l/put.bin") \
        && U3=$(sign "rs/ietf/$l/deleted.bin"); then
        run_checks "IETF flow over HTTP/$v" 180 "$PY" "$PYC" ietf "$U1" "$FC" --http "$v" "${PYCA[@]}" \
            --put-url "$U2" --delete-url "$U3"
    fi
done
if U1=$(sign "rs/tus/h1/main.bin"); then
    run_checks "tus flow over HTTP/1.1" 180 "$PY" "$PYC" tus "$U1" "$FC" --http 1.1 "${PYCA[@]}"
fi
if U1=$(sign "rs/tus/h2/main.bin") && U2=$(sign "rs/tus/h2/deferred.bin") \
    && U3=$(sign "rs/tus/h2/concat.bin") && U4=$(sign "rs/tus/h2/details.bin"); then
    run_checks "tus details over HTTP/2" 180 "$PY" "$PYC" tus "$U1" "$FC" --http 2 "${PYCA[@]}" --details \
        --delete-url "$U2" --concat-url "$U3" --checksum-url "$U4"
fi

# ---------------------------------------------------------------- e. HTTP/3
if U1=$(sign "rs/ietf/h3/main.bin") && U3=$(sign "rs/ietf/h3/deleted.bin"); then
    run_checks "IETF flow over HTTP/3" 180 "$PY" "$PYC" ietf "$U1" "$FC" --http 3 "${PYCA[@]}" --delete-url "$U3"
fi
if U1=$(sign "rs/tus/h3/main.bin"); then
    run_checks "tus flow over HTTP/3" 180 "$PY" "$PYC" tus "$U1" "$FC" --http 3 "${PYCA[@]}"
fi

# ---------------------------------------------------------------- storage paths next to the upload endpoints
# A signed target path is any path (Prosody/ejabberd pick them; a deployment may put its
# upload base under /files/). The tus and IETF endpoints must not swallow such paths.
for p in "files/photo.jpg" "resumable/photo.jpg" "files/sub/photo.jpg"; do
    if URL=$(sign "$p"); then
        B="$WORK/out/shadow"
        code=$("${CURL[@]}" -T "$FC" -D "$B.h" -o "$B.b" -w '%{http_code}' "$URL" 2>/dev/null || true)
        { echo "request: PUT $URL (curl -T, $(stat -c %s "$FC") bytes)"; tr -d '\r' <"$B.h"; head -c 300 "$B.b"; echo; } >"$B.ev"
        if [ "$code" = 201 ]; then
            get_check "$URL" "$FC" "signed PUT to target path '$p' -> 201, GET serves it"
        else
            fail "signed PUT to target path '$p' -> 201, GET serves it" "PUT -> '$code'" "$B.ev"
        fi
    fi
done

# ---------------------------------------------------------------- d. crash: kill -9 mid-upload, restart, resume
CW="$WORK/crash"
mkdir -p "$CW"
: >"$CW/urls.txt"
for i in $(seq -w 1 20); do sign "rs/crash/upload-$i.bin" >>"$CW/urls.txt" || true; done
if [ "$(wc -l <"$CW/urls.txt")" = 20 ] && kill -0 "$XPID" 2>/dev/null; then
    J="$WORK/out/crash.json"
    rc=0; timeout 150 "$PY" "$CRASH" run "$CW/urls.txt" "$CW" --kill-pid "$XPID" --kill-at 0.5 \
        --size $((8 * 1024 * 1024)) --patch $((1024 * 1024)) "${PYCA[@]}" >"$J" 2>"$J.err" || rc=$?
    # Reap the killed server (bounded: it was sent SIGKILL).
    dead=0
    for _ in $(seq 1 100); do kill -0 "$XPID" 2>/dev/null || { dead=1; break; }; sleep 0.1; done
    if [ "$dead" = 0 ]; then
        # crash.py never got to the kill (a failure below): kill it here so the restart
        # does not race a live server on the same port.
        kill -KILL "$XPID" 2>/dev/null || true
    fi
    wait "$XPID" 2>/dev/null || true
    if [ "$rc" = 0 ] && [ "$dead" = 1 ]; then
        pass "crash: 20 concurrent tus uploads (8 MiB, 1 MiB PATCHes), xferd SIGKILLed at $(j "$J" killed_at_bytes) of $(j "$J" total) bytes acknowledged ($(j "$J" complete_before_kill) complete before)"
    else
        fail "crash: 20 concurrent tus uploads, xferd SIGKILLed half-way" \
            "exit $rc, xferd dead: $dead, created $(j "$J" created), errors $(j "$J" errors)" "$(json_ev "$J")"
    fi
    echo "---- restart after kill -9" >>"$WORK/xferd.log"
    if start_xferd "$WORK/xferd.log"; then
        pass "crash: xferd restarts on the same config after kill -9"
        run_checks "crash resume" 180 "$PY" "$CRASH" resume "$CW" "${PYCA[@]}"
    else
        fail "crash: xferd restarts on the same config after kill -9" "no 200 on /health within 30 s" "$WORK/xferd.log"
    fi
    # Uploads finished before the crash are still served.
    get_check "$(sign "rs/tuspy/data 30M.bin" || true)" "$FA" "after the restart the tuspy upload is still served, SHA-256 matches"
else
    fail "crash test setup" "could not sign 20 URLs or xferd is not running"
fi

if ! kill -0 "$XPID" 2>/dev/null; then
    fail "xferd still running at the end" "the process exited (log below)" "$WORK/xferd.log"
fi
if grep -q 'panicked' "$WORK/xferd.log"; then
    grep -n -B2 -A8 'panicked' "$WORK/xferd.log" | head -n 40 >"$WORK/out/panic.txt"
    fail "no panic in xferd's log" "log has a panic" "$WORK/out/panic.txt"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
