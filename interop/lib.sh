# Shell helpers shared by the interop suites and the benchmark scripts. Source it:
#   . "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/interop/lib.sh"

# A port free for both TCP and UDP on 127.0.0.1 (xferd serves h1/h2 and h3 on one port).
free_port() {
    "${PY:-python3}" - <<'PYEOF'
import socket, sys
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close(); u.close(); continue
    t.close(); u.close()
    print(port); sys.exit(0)
sys.exit(1)
PYEOF
}

CLK_TCK=$(getconf CLK_TCK)
# pid -> utime+stime in clock ticks (0 when the process is gone).
cpu_ticks() {
    local f
    if read -r -a f <"/proc/$1/stat" 2>/dev/null; then echo $((f[13] + f[14])); else echo 0; fi
}

# Stops a background process: TERM, up to 5 s, then KILL; reaps it. No-op for "".
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# One timed transfer with a third-party client: curl for h1/h2, pycurl (HTTP/3 only, through
# $H3 = interop/http/h3_client.py run by $PY) for h3.
#   measure_transfer PROTO up|down URL SRC_FILE ERR_FILE BODY_FILE TIMEOUT_SECS
# Prints "status seconds bytes"; status is "wrongversion" when the response came over another
# HTTP version (curl falls back to 1.1 silently, and a figure labelled h2 must be HTTP/2) and
# "h3err" when pycurl failed. Client errors go to ERR_FILE, an upload's response to BODY_FILE.
measure_transfer() {
    local proto=$1 kind=$2 url=$3 src=$4 err=$5 body=$6 tmo=$7 line status secs bytes ver
    case "$proto" in
        h1|h2)
            local flag=--http1.1
            [ "$proto" = h2 ] && flag=--http2
            if [ "$kind" = up ]; then
                line=$(curl -sS -k "$flag" --connect-timeout 5 --max-time "$tmo" -H 'Expect:' \
                    -T "$src" -o "$body" -w '%{http_code} %{time_total} %{size_upload} %{http_version}' "$url" 2>"$err" || true)
            else
                line=$(curl -sS -k "$flag" --connect-timeout 5 --max-time "$tmo" \
                    -o /dev/null -w '%{http_code} %{time_total} %{size_download} %{http_version}' "$url" 2>"$err" || true)
            fi
            read -r status secs bytes ver <<<"$line"
            if [ "${ver:-}" != "${flag#--http}" ] && [ "${ver:-}" != "${flag#--http}.0" ]; then
                echo "HTTP version was '${ver:-?}', not ${flag#--http}" >>"$err"
                status="wrongversion"
            fi
            ;;
        h3)
            local js="$err.json"
            if [ "$kind" = up ]; then
                timeout $((tmo + 30)) "$PY" "$H3" --timeout "$tmo" put "$url" "$src" >"$js" 2>"$err" || true
            else
                timeout $((tmo + 30)) "$PY" "$H3" --timeout "$tmo" get "$url" >"$js" 2>"$err" || true
            fi
            line=$("$PY" -c 'import json,sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    d = {}
ok = d.get("http_version") == "3" and "error" not in d
print(d.get("status", 0) if ok else "h3err", d.get("seconds", 0), d.get("bytes", 0))' "$js" 2>/dev/null || echo "h3err 0 0")
            read -r status secs bytes <<<"$line"
            [ "$status" = h3err ] && cat "$js" >>"$err" 2>/dev/null || true
            ;;
    esac
    echo "${status:-0} ${secs:-0} ${bytes:-0}"
}

# HTTP/3 GETs of URL by oha ($OHA, built with --features http3) over 16 connections for SECS
# seconds (duration mode). Prints "ok failed": the 200s, and the other statuses and errors;
# requests cut by the deadline are neither. oha's own "Requests/sec" is not used: it divides by
# the whole run, and against caddy and gtlsserver (not xferd) oha 1.16 then waits about 30 s
# for its connections to close (caddy's 321 req/s was a server doing about 7,000).
#   oha_h3 SECS URL
oha_h3() {
    local out
    out=$(timeout $(($1 + 120)) "$OHA" --no-tui -z "${1}s" -c 16 --http-version 3 --insecure "$2" 2>&1 || true)
    awk '/^ *\[200\] [0-9]+ responses/ {ok += $2; next}
        /^ *\[[0-9]+\] [0-9]+ responses/ {bad += $2; next}
        /^ *\[[0-9]+\] / && !/aborted due to deadline/ {bad += substr($1, 2) + 0}
        END {print ok + 0, bad + 0}' <<<"$out"
}

# caddy_start WORK PORT ROOT TLS...: caddy 2.6 serving ROOT (file_server) over h1, h2 and h3 on
# 127.0.0.1:PORT, with TLS the Caddyfile `tls` arguments ("internal", or CERT KEY), no admin
# endpoint, no system trust store touched, `default_sni 127.0.0.1` (QUIC clients that connect to
# an IP address send no SNI), HOME and XDG dirs inside WORK; log in WORK/caddy.log. Sets
# CADDY_PID (not in a subshell: call it directly).
caddy_start() {
    local work=$1 port=$2 root=$3
    shift 3
    mkdir -p "$work/home" "$work/xdg/data" "$work/xdg/config"
    cat >"$work/Caddyfile" <<EOF
{
	admin off
	auto_https disable_redirects
	skip_install_trust
	default_sni 127.0.0.1
	storage file_system $work/xdg/data/caddy
	servers {
		protocols h1 h2 h3
	}
}

https://127.0.0.1:$port {
	tls $*
	root * $root
	file_server
}
EOF
    (cd "$work" && exec env HOME="$work/home" XDG_DATA_HOME="$work/xdg/data" XDG_CONFIG_HOME="$work/xdg/config" \
        caddy run --config "$work/Caddyfile" --adapter caddyfile) >"$work/caddy.log" 2>&1 &
    CADDY_PID=$!
}

# Counters and report lines shared by the interop suites ("PASS name", "FAIL name: why").
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
# fail NAME WHY [EVIDENCE_FILE]: the evidence (the request that went wrong and what came
# back) is quoted under the line.
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $1: $2"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then sed 's/^/    | /' "$3" | head -n 40; fi
}

# ns_server_setup WORK ADDR PORT MAX_MB SECRET [SAN]: for the namespace benches (lossy.sh,
# mobile.sh): a self-signed certificate for SAN (default IP:ADDR) in WORK/tls and a config
# WORK/xferd.toml serving ADDR:PORT from WORK/data (state in WORK/state), uploads up to MAX_MB.
ns_server_setup() {
    local work=$1 addr=$2 port=$3 max_mb=$4 secret=$5 san=${6:-IP:$2}
    mkdir -p "$work/data" "$work/state" "$work/tls"
    cat >"$work/tls/req.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = xferd-bench
[ext]
subjectAltName = $san
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EOF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -config "$work/tls/req.cnf" -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>"$work/tls/openssl.log"
    cat >"$work/xferd.toml" <<EOF
[server]
listen = "$addr:$port"
storage_path = "$work/data"
state_path = "$work/state"
max_upload_size = "$((max_mb + 1))MB"

[tls]
cert = "$work/tls/cert.pem"
key = "$work/tls/key.pem"

[security]
secret = "$secret"
EOF
}

# wire_ns_pair NS_A NS_B ADDR_A ADDR_B: for the `xferd wire` benches (mobile.sh, zerortt.sh):
# two network namespaces, each with loopback up and a TUN device xw0 (the wire attaches to
# both), ADDR_A in NS_A and ADDR_B in NS_B as point-to-point peers.
wire_ns_pair() {
    local a=$1 b=$2 addr_a=$3 addr_b=$4 ns
    ip netns add "$a"
    ip netns add "$b"
    for ns in "$a" "$b"; do
        ip -n "$ns" link set lo up
        ip -n "$ns" tuntap add dev xw0 mode tun
    done
    ip -n "$a" addr add "$addr_a" peer "$addr_b" dev xw0
    ip -n "$b" addr add "$addr_b" peer "$addr_a" dev xw0
    ip -n "$a" link set xw0 up
    ip -n "$b" link set xw0 up
}

# ns_remove NS...: kills whatever still runs in each namespace, then deletes it (cleanup).
ns_remove() {
    local ns pid
    for ns in "$@"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
