#!/usr/bin/env bash
# Interop check of xferd's Prometheus endpoint against Prometheus's own linter:
# starts xferd, makes requests over HTTP/1.1 and HTTP/2 (Debian curl) and HTTP/3 (pycurl,
# interop/http/h3_client.py) - signed PUTs, GETs, Range GETs and a PUT with a bad signature
# on each protocol - then fetches /metrics, runs `promtool check metrics` on it (any error or
# lint warning fails), and checks that the expected families exist, with the right type, a
# `protocol` label per protocol, and values that account for the requests made.
#
# Usage: interop/metrics/run.sh [/path/to/xferd]   (default: target/release/xferd of this repo)
# Needs interop/http/install.sh (curl, pycurl with HTTP/3) and interop/metrics/install.sh
# (promtool). Prints "PASS name" / "FAIL name: reason" lines, then "metrics: N/M passed" and
# "N passed, M failed"; exits non-zero on any failure.
# Env: PYTHON (default python3), KEEP_WORK=1 keeps the temp dir (xferd.log, metrics.txt).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid, pass/fail, measure_transfer

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "not executable: $XFERD" >&2; exit 64; }
XFERD=$(readlink -f "$XFERD")
PY=${PYTHON:-python3}
H3="$REPO/interop/http/h3_client.py"
SIGN_PY="$REPO/interop/http/v3sign.py"
SECRET="metrics-secret-$RANDOM$RANDOM"
CURL=(curl -sS -k --connect-timeout 5 --max-time 60)

for tool in curl promtool sha256sum timeout "$PY"; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: run interop/http/install.sh and interop/metrics/install.sh" >&2
        exit 69
    }
done
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-metrics.XXXXXX")
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

finish() {
    echo "metrics: $PASSED/$((PASSED + FAILED)) passed"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && exit 0
    exit 1
}


PORT=$(free_port)
BASE="https://127.0.0.1:$PORT"
CONF="$WORK/xferd.toml"
mkdir -p "$WORK/data" "$WORK/state" "$WORK/out"
cat >"$CONF" <<EOF
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/data"
state_path = "$WORK/state"
max_upload_size = "1GB"

[security]
secret = "$SECRET"
EOF

"$XFERD" serve --config "$CONF" >"$WORK/xferd.log" 2>&1 &
XPID=$!
healthy=0
for _ in $(seq 1 150); do
    kill -0 "$XPID" 2>/dev/null || break
    code=$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/health" || true)
    if [ "$code" = 200 ]; then healthy=1; break; fi
    sleep 0.2
done
if [ "$healthy" != 1 ]; then
    fail "startup" "xferd did not answer 200 on GET $BASE/health within 30 s (log below)" "$WORK/xferd.log"
    finish
fi
pass "startup: GET /health -> 200"

sign_put() { # path size -> URL
    if "$XFERD" sign --help >/dev/null 2>&1; then
        timeout 10 "$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$1" --size "$2" --expires 3600
    else
        "$PY" "$SIGN_PY" sign --secret "$SECRET" --base "$BASE" --method PUT --path "$1"
    fi
}
tamper_url() { # flip the last hex digit of the MAC
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

SIZE=$((1024 * 1024 + 777))
ORIG="$WORK/orig.bin"
head -c "$SIZE" /dev/urandom >"$ORIG"
ORIG_SHA=$(sha256sum "$ORIG" | cut -d' ' -f1)

# ---------------------------------------------------------------- traffic
# request label proto(h1|h2|h3) kind(put|get|range|badput) url want_status
# Records "proto kind status bytes" in $WORK/requests.tsv and passes/fails the request itself.
: >"$WORK/requests.tsv"
request() {
    local label=$1 proto=$2 kind=$3 url=$4 want=$5 line status bytes ver ev="$WORK/out/$1.ev"
    case "$proto" in
        h1|h2)
            local flag=--http1.1 wantver=1.1
            [ "$proto" = h2 ] && { flag=--http2; wantver=2; }
            case "$kind" in
                put|badput) line=$("${CURL[@]}" "$flag" -H 'Expect:' -T "$ORIG" -o "$WORK/out/$label.body" \
                    -w '%{http_code} %{size_upload} %{http_version}' "$url" 2>"$ev" || true) ;;
                get) line=$("${CURL[@]}" "$flag" -o "$WORK/out/$label.body" \
                    -w '%{http_code} %{size_download} %{http_version}' "$url" 2>"$ev" || true) ;;
                range) line=$("${CURL[@]}" "$flag" -r 100-1099 -o "$WORK/out/$label.body" \
                    -w '%{http_code} %{size_download} %{http_version}' "$url" 2>"$ev" || true) ;;
            esac
            read -r status bytes ver <<<"$line"
            { echo "request: $kind $url (curl $flag)"; echo "response body (first 400 bytes):"
              head -c 400 "$WORK/out/$label.body" 2>/dev/null; echo; } >>"$ev"
            if [ "${ver:-}" != "$wantver" ]; then
                echo "response came over HTTP/${ver:-?}, not $wantver" >>"$ev"
                status="wrongversion:${status:-}"
            fi
            ;;
        h3)
            local js="$WORK/out/$label.json" rc=0
            case "$kind" in
                put|badput) timeout 90 "$PY" "$H3" --timeout 60 put "$url" "$ORIG" >"$js" 2>"$ev" || rc=$? ;;
                get) timeout 90 "$PY" "$H3" --timeout 60 get "$url" >"$js" 2>"$ev" || rc=$? ;;
                range) timeout 90 "$PY" "$H3" --timeout 60 get "$url" --range 100-1099 >"$js" 2>"$ev" || rc=$? ;;
            esac
            cat "$js" >>"$ev" 2>/dev/null || true
            line=$("$PY" -c 'import json,sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    d = {}
print(d.get("status", 0) if d.get("http_version") == "3" and "curl error" not in d.get("error", "") else "h3err", d.get("bytes", 0))' "$js" 2>/dev/null || echo "h3err 0")
            read -r status bytes <<<"$line"
            ;;
    esac
    bytes=${bytes%.*}
    printf '%s\t%s\t%s\t%s\n' "$proto" "$kind" "${status:-0}" "${bytes:-0}" >>"$WORK/requests.tsv"
    if [ "${status:-}" = "$want" ]; then
        pass "$label -> $want"
    else
        fail "$label -> $want" "got '${status:-}'" "$ev"
    fi
}

for p in h1 h2 h3; do
    url=$(sign_put "metrics/$p.bin" "$SIZE")
    get=${url%%\?*}
    request "$p PUT signed" "$p" put "$url" 201
    request "$p GET" "$p" get "$get" 200
    request "$p GET Range 100-1099" "$p" range "$get" 206
    bad=$(tamper_url "$(sign_put "metrics/$p-bad.bin" "$SIZE")")
    request "$p PUT with a bad signature" "$p" badput "$bad" 403
done

# ---------------------------------------------------------------- scrape
# Over HTTP/1.1: this scrape's own connection is an active h1 connection.
H="$WORK/metrics.headers"
M="$WORK/metrics.txt"
code=$("${CURL[@]}" --http1.1 -D "$H" -o "$M" -w '%{http_code}' "$BASE/metrics" 2>"$WORK/out/scrape.err" || true)
if [ "$code" = 200 ] && [ -s "$M" ]; then
    pass "GET /metrics -> 200 ($(wc -l <"$M") lines)"
else
    fail "GET /metrics -> 200" "got '$code', $(stat -c %s "$M" 2>/dev/null || echo 0) bytes" "$WORK/out/scrape.err"
    finish
fi
ctype=$(tr -d '\r' <"$H" | awk -F': *' 'tolower($1)=="content-type" { v=$2 } END { print v }')
if [[ "$ctype" == "text/plain"* ]]; then
    pass "/metrics Content-Type is the text exposition format ($ctype)"
else
    fail "/metrics Content-Type is the text exposition format" "Content-Type '$ctype'"
fi

# promtool: exit 0 and nothing printed (it prints lint problems and still may exit 0 or 3).
rc=0
promtool check metrics <"$M" >"$WORK/promtool.out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && [ ! -s "$WORK/promtool.out" ]; then
    pass "promtool check metrics: no errors, no lint warnings"
else
    fail "promtool check metrics: no errors, no lint warnings" "exit $rc, $(wc -l <"$WORK/promtool.out") lines of findings" "$WORK/promtool.out"
fi

# ---------------------------------------------------------------- families
# Each check prints "PASS name" or "FAIL name<TAB>reason", parsed below.
"$PY" - "$M" "$WORK/requests.tsv" "$SIZE" >"$WORK/checks.out" 2>&1 <<'EOF' || true
import re, sys
path, reqs, size = sys.argv[1], sys.argv[2], int(sys.argv[3])

# --- a small parser of the text exposition format (0.0.4)
types, samples = {}, []
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
for raw in open(path, encoding="utf-8", errors="replace"):
    line = raw.rstrip("\n")
    if not line.strip():
        continue
    if line.startswith("#"):
        parts = line.split(None, 3)
        if len(parts) >= 4 and parts[1] == "TYPE":
            types[parts[2]] = parts[3].strip()
        continue
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)', line)
    if not m:
        continue
    labels = {}
    body = (m.group(2) or "{}")[1:-1]
    pos = 0
    while pos < len(body):
        lm = LABEL.match(body, pos)
        if not lm:
            break
        labels[lm.group(1)] = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), lm.group(2))
        pos = lm.end()
    try:
        value = float(m.group(3))
    except ValueError:
        continue
    samples.append((m.group(1), labels, value))

def family_samples(fam):
    # A counter's samples are named fam (it already ends in _total) or fam + _total.
    return [s for s in samples if s[0] == fam or s[0] == fam + "_total"]

def family_type(fam):
    return types.get(fam) or types.get(fam[:-6] if fam.endswith("_total") else fam)

def by_proto(ss):
    out = {}
    for _, labels, v in ss:
        if "protocol" in labels:
            out[labels["protocol"]] = out.get(labels["protocol"], 0.0) + v
    return out

def result(ok, name, why=""):
    print(("PASS %s" % name) if ok else ("FAIL %s\t%s" % (name, why)))

# What the requests did, per protocol (from run.sh's log of them).
done = {}
for l in open(reqs):
    proto, kind, status, nbytes = l.rstrip("\n").split("\t")
    done.setdefault(proto, []).append((kind, status, int(nbytes or 0)))
def did(proto, kind, status):
    return any(k == kind and s == status for k, s, _ in done.get(proto, []))

# family, type, {protocol: minimum summed value}, needs a protocol label on every sample
P = ("h1", "h2", "h3")
checks = [
    ("xferd_upload_bytes_total", "counter",
     {p: size for p in P if did(p, "put", "201")}, True),
    ("xferd_download_bytes_total", "counter",
     {p: size + 1000 for p in P if did(p, "get", "200") and did(p, "range", "206")}, True),
    ("xferd_range_requests_total", "counter",
     {p: 1 for p in P if did(p, "range", "206")}, True),
    ("xferd_upload_errors_total", "counter",
     {p: 1 for p in P if did(p, "badput", "403")}, True),
    # The scrape itself is an open HTTP/1.1 connection.
    ("xferd_connections_active", "gauge", {"h1": 1}, True),
    ("xferd_buffer_pool_bytes_in_use", "gauge", {}, False),
    ("process_resident_memory_bytes", "gauge", {}, False),
]
for fam, want_type, mins, labelled in checks:
    ss = family_samples(fam)
    if not ss:
        result(False, "%s exists" % fam, "no sample of this family in /metrics")
        continue
    t = family_type(fam)
    result(t == want_type, "%s exists, TYPE %s (%d series)" % (fam, want_type, len(ss)),
           "TYPE is %r" % t)
    bad = [s for s in ss if s[2] < 0 or s[2] != s[2]]
    if bad:
        result(False, "%s values >= 0" % fam, "negative or NaN: %r" % bad[:3])
    if labelled:
        nolabel = [s for s in ss if "protocol" not in s[1]]
        others = sorted({s[1]["protocol"] for s in ss if "protocol" in s[1]} - set(P))
        result(not nolabel and not others, "%s: every series has protocol in h1/h2/h3" % fam,
               ("series without a protocol label: %r" % nolabel[:3]) if nolabel
               else "other protocol values: %r" % others)
        got = by_proto(ss)
        for p, least in sorted(mins.items()):
            result(got.get(p, -1) >= least, '%s{protocol="%s"} >= %d' % (fam, p, least),
                   "got %s" % (got.get(p, "no such series")))
    if fam == "process_resident_memory_bytes":
        v = ss[0][2]
        result(v > 1 << 20, "process_resident_memory_bytes > 1 MiB", "got %r" % v)
EOF
while IFS= read -r line; do
    case "$line" in
        "PASS "*) pass "${line#PASS }" ;;
        "FAIL "*) rest=${line#FAIL }; fail "${rest%%$'\t'*}" "${rest#*$'\t'}" ;;
        *) echo "    | $line" ;;
    esac
done <"$WORK/checks.out"
if [ "$FAILED" != 0 ]; then
    echo "# /metrics families present (for the FAIL lines above):"
    grep -E '^# TYPE ' "$M" | awk '{print "    | " $3 " " $4}' | head -n 60
fi

if ! kill -0 "$XPID" 2>/dev/null; then
    fail "xferd still running at the end" "the process exited (log below)" "$WORK/xferd.log"
fi
if grep -q 'panicked' "$WORK/xferd.log"; then
    fail "no panic in xferd's log" "log has a panic" "$WORK/xferd.log"
fi
finish
