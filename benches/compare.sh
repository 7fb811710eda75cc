#!/usr/bin/env bash
# The one benchmark command (not a test): every row of the performance table, xferd against
# each peer in one run, same clients, same files, interleaved runs, medians. Prints the table:
# work, xferd, peer, ratio, target, met or missed; then the clients, sizes, socket buffers,
# machine and commit.
#
#   bash benches/install-peers.sh          # once, as root
#   cargo build --release
#   bash benches/compare.sh [/path/to/xferd]
#
# Rows (ROWS picks a subset: "put get small tus memory"):
#   put     PUT PUT_MB: curl --http1.1 / --http2 -T (xferd vs nginx WebDAV PUT, which stores
#           without fsync or hash), pycurl HTTP/3 (xferd vs ngtcp2 gtlsserver, a sink); xferd's
#           CPU seconds per GiB uploaded, against its download's
#   get     GET GET_MB: curl h1/h2 (xferd vs nginx, vs caddy), pycurl h3 (xferd vs gtlsserver,
#           vs caddy)
#   small   4 KiB GETs: h2load --h1 -n SMALL_N -c 16 and h2load (h2) -n 2xSMALL_N -c 16 -m 10
#           (xferd vs nginx, keepalive_requests high enough that nginx never closes); oha
#           over h3 for H3_SECS with 16 connections (xferd vs caddy, vs gtlsserver, the C
#           stack) when oha is installed
#   tus     benches/tus.sh with tus-js-client, TUS_MB, the same chunk size for both servers
#   memory  peak RSS: one MEM_MB upload per protocol; SLOW_N uploads at 64 KiB/s each;
#           IDLE_N idle TLS connections
# Env: PUT_MB (512), GET_MB (1024), MEM_MB (1024), TUS_MB (256), RUNS (3), SMALL_N (20000),
#      SLOW_N (1000), IDLE_N (10000), H3_SECS (5), ROWS, PYTHON, KEEP_WORK=1, TMPDIR.
# All servers share one certificate (ECDSA P-256, made here) and run on loopback; nginx runs
# 2 workers (the machine's 2 cores); every server logs nothing per request.
# On this workplace's machines (Firecracker guests with free page reporting: dmesg "Free page
# reporting enabled") memory the kernel freed goes back to the host, and the next touch of it
# is slow: the page-cache copy of an upload's writes (copy_folio_from_iter_atomic) was 7% of
# a warm h1 PUT's profile and 45-55% of a cold one, and the same 512 MiB h3 PUT took 1.5 s
# or 2.0-2.3 s (twice the CPU) by which pages it got. Compare rows of one run, not runs.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid, measure_transfer, oha_h3

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
H3="$REPO/interop/http/h3_client.py"
LOAD="$HERE/compare/load.py"
PY=${PYTHON:-python3}
PUT_MB=${PUT_MB:-512}
GET_MB=${GET_MB:-1024}
MEM_MB=${MEM_MB:-1024}
TUS_MB=${TUS_MB:-256}
RUNS=${RUNS:-3}
SMALL_N=${SMALL_N:-20000}
H3_SECS=${H3_SECS:-5}
SLOW_N=${SLOW_N:-1000}
IDLE_N=${IDLE_N:-10000}
ROWS=${ROWS:-put get small tus memory}
SECRET="bench-secret-$RANDOM$RANDOM"
XFER_TIMEOUT=900

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "no xferd binary at '$XFERD' (cargo build --release)" >&2; exit 64; }
XFERD=$(readlink -f "$XFERD")
for tool in curl caddy nginx gtlsserver h2load openssl timeout "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-peers.sh" >&2; exit 69; }
done
OHA=$(command -v oha || { [ -x "$HOME/.cargo/bin/oha" ] && echo "$HOME/.cargo/bin/oha"; } || true)
row() { case " $ROWS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-compare.XXXXXX")
PIDS=()
SAMPLER=""
cleanup() {
    local rc=$? p
    stop_pid "$SAMPLER"
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log() { echo "# $*" >&2; }

# ------------------------------------------------------------------ files and certificate
mkdir -p "$WORK"/{src,xdata/get,xstate,nroot/up,ntmp,groot,croot,home,xdg/data,xdg/config}
mk() { head -c "$2" /dev/urandom >"$WORK/src/$1"; }
mk put.bin $((PUT_MB << 20))
mk get.bin $((GET_MB << 20))
mk small.bin 4096
row memory && mk mem.bin $((MEM_MB << 20))
for root in xdata/get nroot groot croot; do
    for f in get.bin small.bin; do ln "$WORK/src/$f" "$WORK/$root/$f"; done
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# ------------------------------------------------------------------ servers
wait_http() { # url pid name
    for _ in $(seq 1 150); do
        kill -0 "$2" 2>/dev/null || break
        [ "$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
        sleep 0.2
    done
    echo "$3 did not answer $1 within 30 s" >&2; tail -n 20 "$WORK/$3.log" >&2; exit 1
}
XPID=""
XPORT=""
start_xferd() {
    XPORT=$(free_port)
    cat >"$WORK/xferd.toml" <<EOF
[server]
listen = "127.0.0.1:$XPORT"
storage_path = "$WORK/xdata"
state_path = "$WORK/xstate"
max_upload_size = "4GB"
max_connections = $((IDLE_N + 2000))

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[security]
secret = "$SECRET"
EOF
    "$XFERD" serve --config "$WORK/xferd.toml" >>"$WORK/xferd.log" 2>&1 &
    XPID=$!
    PIDS+=("$XPID")
    wait_http "https://127.0.0.1:$XPORT/health" "$XPID" xferd
}
stop_xferd() { stop_pid "$XPID"; XPID=""; }

NPORT=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/ntmp;
    proxy_temp_path $WORK/ntmp/proxy;
    fastcgi_temp_path $WORK/ntmp/fastcgi;
    uwsgi_temp_path $WORK/ntmp/uwsgi;
    scgi_temp_path $WORK/ntmp/scgi;
    types { application/octet-stream bin; }
    server {
        listen 127.0.0.1:$NPORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        root $WORK/nroot;
        location /up/ {
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }
    }
}
EOF
nginx -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 &
NGPID=$!
PIDS+=("$NGPID")
wait_http "https://127.0.0.1:$NPORT/small.bin" "$NGPID" nginx

GPORT=$(free_port)
(cd "$WORK/groot" && exec gtlsserver -q -d "$WORK/groot" 127.0.0.1 "$GPORT" "$WORK/key.pem" "$WORK/cert.pem") \
    >"$WORK/gtlsserver.log" 2>&1 &
GTPID=$!
PIDS+=("$GTPID")

CPORT=$(free_port)
caddy_start "$WORK" "$CPORT" "$WORK/croot" "$WORK/cert.pem" "$WORK/key.pem"
CAPID=$CADDY_PID
PIDS+=("$CAPID")
wait_http "https://127.0.0.1:$CPORT/small.bin" "$CAPID" caddy
for _ in $(seq 1 50); do
    timeout 10 "$PY" "$H3" --timeout 5 get "https://127.0.0.1:$GPORT/small.bin" >/dev/null 2>&1 && break
    sleep 0.2
done
start_xferd

# ------------------------------------------------------------------ measurements
RES="$WORK/results.tsv"   # row server proto run status bytes seconds cpu_ticks
: >"$RES"
sign() { "$XFERD" sign --config "$WORK/xferd.toml" --scheme v3 --method PUT --path "$1" --expires 2h; }
# CPU ticks of a server: the process and its children (nginx's workers).
tree_ticks() {
    local t c
    t=$(cpu_ticks "$1")
    for c in $(pgrep -P "$1" 2>/dev/null); do t=$((t + $(cpu_ticks "$c"))); done
    echo "$t"
}
# Waits (at most 10 s) until no server is busy: the dirty pages of the last upload written
# out (sync) and the servers' CPU ticks together below 2 per 200 ms. A server still working
# after its answer (nginx went on at 100% of a core for a second or more after some h2 PUTs)
# took the CPU of the next server's run (seen with top during xferd's h3 PUT right after
# nginx's h2 PUT).
all_ticks() { local p t=0; for p in "${PIDS[@]}"; do t=$((t + $(tree_ticks "$p"))); done; echo "$t"; }
quiesce() {
    local t0 t1 i
    sync
    for i in $(seq 1 50); do
        t0=$(all_ticks)
        sleep 0.2
        t1=$(all_ticks)
        [ $((t1 - t0)) -lt 2 ] && return 0
    done
    log "servers still busy after 10 s ($((t1 - t0)) ticks per 200 ms); measuring anyway"
}
# one ROW SERVER PROTO RUN up|down URL SRC PID_FOR_CPU
one() {
    local r=$1 srv=$2 proto=$3 run=$4 kind=$5 url=$6 src=$7 pid=$8 status secs bytes c0 c1
    quiesce
    c0=$(tree_ticks "$pid")
    read -r status secs bytes <<<"$(measure_transfer "$proto" "$kind" "$url" "$src" "$WORK/err" "$WORK/body" "$XFER_TIMEOUT")"
    c1=$(tree_ticks "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$srv" "$proto" "$run" "$status" "${bytes%.*}" "$secs" "$((c1 - c0))" >>"$RES"
    log "$r $srv $proto run $run: status $status, $bytes bytes, $secs s"
}

if row put; then
    for run in $(seq 1 "$RUNS"); do
        for proto in h1 h2 h3; do
            one put xferd "$proto" "$run" up "$(sign "put/$proto-$run.bin")" "$WORK/src/put.bin" "$XPID"
            if [ "$proto" = h3 ]; then
                one put gtlsserver h3 "$run" up "https://127.0.0.1:$GPORT/sink-$run.bin" "$WORK/src/put.bin" "$GTPID"
            else
                one put nginx "$proto" "$run" up "https://127.0.0.1:$NPORT/up/$proto-$run.bin" "$WORK/src/put.bin" "$NGPID"
            fi
        done
        rm -rf "$WORK/xdata/put" "$WORK/nroot/up"/*
    done
fi

if row get; then
    for run in $(seq 1 "$RUNS"); do
        for proto in h1 h2 h3; do
            one get xferd "$proto" "$run" down "https://127.0.0.1:$XPORT/get/get.bin" "" "$XPID"
            if [ "$proto" = h3 ]; then
                one get gtlsserver h3 "$run" down "https://127.0.0.1:$GPORT/get.bin" "" "$GTPID"
            else
                one get nginx "$proto" "$run" down "https://127.0.0.1:$NPORT/get.bin" "" "$NGPID"
            fi
            one get caddy "$proto" "$run" down "https://127.0.0.1:$CPORT/get.bin" "" "$CAPID"
        done
    done
fi

SMALL="$WORK/small.tsv"   # server mode run req_per_s succeeded total cpu_ticks
: >"$SMALL"
h2l() { # server mode run url pid
    local out ok total rps c0 c1
    quiesce
    c0=$(tree_ticks "$5")
    case $2 in
        h1) out=$(timeout 600 h2load --h1 -n "$SMALL_N" -c 16 "$4" 2>&1 || true) ;;
        h2) out=$(timeout 600 h2load -n $((2 * SMALL_N)) -c 16 -m 10 "$4" 2>&1 || true) ;;
    esac
    rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    read -r total ok <<<"$(sed -n 's/^requests: \([0-9]*\) total, [0-9]* started, [0-9]* done, \([0-9]*\) succeeded.*/\1 \2/p' <<<"$out")"
    c1=$(tree_ticks "$5")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${rps:-0}" "${ok:-0}" "${total:-0}" "$((c1 - c0))" >>"$SMALL"
    log "small $1 $2 run $3: ${rps:-?} req/s, ${ok:-?}/${total:-?} succeeded, $((c1 - c0)) CPU ticks"
}
# HTTP/3 4 KiB GETs by oha for H3_SECS seconds (oha_h3 in interop/lib.sh: counts the 200s).
oha3() { # server run
    local port=$XPORT path=/get/small.bin pid=$XPID ok other c0 c1
    case $1 in
        caddy) port=$CPORT; path=/small.bin; pid=$CAPID ;;
        gtlsserver) port=$GPORT; path=/small.bin; pid=$GTPID ;;
    esac
    quiesce
    c0=$(tree_ticks "$pid")
    read -r ok other <<<"$(oha_h3 "$H3_SECS" "https://127.0.0.1:$port$path")"
    c1=$(tree_ticks "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" h3 "$2" "$(awk -v n="$ok" -v s="$H3_SECS" 'BEGIN {printf "%.0f", n / s}')" \
        "$ok" "$((ok + other))" "$((c1 - c0))" >>"$SMALL"
    log "small $1 h3 run $2: $ok 200s in ${H3_SECS} s, $other failed, $((c1 - c0)) CPU ticks"
}
if row small; then
    for run in $(seq 1 "$RUNS"); do
        for mode in h1 h2; do
            h2l xferd "$mode" "$run" "https://127.0.0.1:$XPORT/get/small.bin" "$XPID"
            h2l nginx "$mode" "$run" "https://127.0.0.1:$NPORT/small.bin" "$NGPID"
        done
        if [ -n "$OHA" ]; then
            for srv in xferd caddy gtlsserver; do
                oha3 "$srv" "$run"
            done
        fi
    done
fi

TUSLINE="-"
if row tus; then
    if SIZE_MB=$TUS_MB RUNS=$RUNS CLIENTS=tus-js-client bash "$HERE/tus.sh" "$XFERD" >"$WORK/tus.out" 2>"$WORK/tus.err"; then
        TUSLINE=$(sed -n 's/^ratio xferd plain HTTP \/ @tus\/server, tus-js-client: \([0-9.]*\)x.*/\1/p' "$WORK/tus.out")
        # The median column of tus.sh's fixed-width table (the runs after it vary in number).
        TUSMED=$(grep -E '^tus-js-client +(@tus/server|xferd plain_listen)' "$WORK/tus.out" | cut -c51-62 | tr -d ' ' | tr '\n' ' ')
    else
        log "benches/tus.sh failed: $(tail -n 5 "$WORK/tus.err")"
    fi
fi

# Peak RSS of a fresh xferd (VmHWM) during one load.
MEMR="$WORK/mem.tsv"   # case detail peak_kib
: >"$MEMR"
vm_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
if row memory; then
    for proto in h1 h2 h3; do
        stop_xferd; start_xferd
        one mem xferd "$proto" 1 up "$(sign "mem/$proto.bin")" "$WORK/src/mem.bin" "$XPID"
        printf 'upload %s\t%s MiB over %s\t%s\n' "$proto" "$MEM_MB" "$proto" "$(vm_hwm "$XPID")" >>"$MEMR"
        rm -rf "$WORK/xdata/mem"
    done
    stop_xferd; start_xferd
    slow=$(timeout 900 "$PY" "$LOAD" slow --url-base "https://127.0.0.1:$XPORT" --secret "$SECRET" \
        --n "$SLOW_N" --rate 65536 --size $((1 << 20)) 2>"$WORK/slow.err" || echo '{}')
    printf 'slow\t%s\t%s\n' "$slow" "$(vm_hwm "$XPID")" >>"$MEMR"
    log "slow uploads: $slow"
    rm -rf "$WORK/xdata/slow"
    stop_xferd; start_xferd
    idle=$(timeout 900 "$PY" "$LOAD" idle --port "$XPORT" --n "$IDLE_N" --hold 10 2>"$WORK/idle.err" || echo '{}')
    printf 'idle\t%s\t%s\n' "$idle" "$(vm_hwm "$XPID")" >>"$MEMR"
    log "idle connections: $idle"
fi
stop_xferd

# ------------------------------------------------------------------ report
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] || COMMIT="$COMMIT+dirty"
echo "== xferd compare: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $COMMIT, $XFERD"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r)"
echo "sockets: net.core.rmem_max $(sysctl -n net.core.rmem_max), wmem_max $(sysctl -n net.core.wmem_max); loopback 127.0.0.1; files in page cache"
echo "clients: $(curl --version | head -n1 | cut -d' ' -f1-2) (h1/h2), pycurl $("$PY" -c 'import pycurl; print(pycurl.version.split()[0])') (h3), $(h2load --version | head -n1), oha ${OHA:+$("$OHA" --version 2>/dev/null | head -n1)}${OHA:-not installed}"
echo "peers: $(nginx -v 2>&1 | cut -d' ' -f3) (2 workers, WebDAV PUT, sendfile), gtlsserver $(dpkg-query -W -f '${Version}' ngtcp2-server 2>/dev/null), caddy $(caddy version | cut -d' ' -f1)"
echo "sizes: PUT $PUT_MB MiB, GET $GET_MB MiB, small 4 KiB (h1 $SMALL_N requests, h2 $((2 * SMALL_N)) with 10 streams per connection, 16 connections), memory upload $MEM_MB MiB, $SLOW_N slow uploads of 1 MiB at 64 KiB/s, $IDLE_N idle TLS connections; runs $RUNS, medians"
echo
"$PY" - "$RES" "$SMALL" "$MEMR" "$TUSLINE" "${TUSMED:-}" "$CLK_TCK" $((PUT_MB << 20)) $((GET_MB << 20)) $((MEM_MB << 20)) <<'EOF'
import json, statistics, sys
res, small, memr, tus, tusmed, clk, put_b, get_b, mem_b = sys.argv[1:10]
clk = int(clk)
sizes = {"put": int(put_b), "get": int(get_b), "mem": int(mem_b)}
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
want = {"up": ("201", "204", "200"), "down": ("200",)}

def speeds(r, srv, proto):
    out, cpu = [], []
    for x in rows:
        # gtlsserver is a sink: it reads the whole PUT body, then answers 404.
        ok = x[4].isdigit() and (int(x[4]) < 300 or (srv, r, x[4]) == ("gtlsserver", "put", "404"))
        if x[0] == r and x[1] == srv and x[2] == proto and ok and int(x[5]) == sizes[r] and float(x[6]) > 0:
            b = int(x[5]); out.append(b / float(x[6]) / 1e6); cpu.append(int(x[7]) / clk / (b / 2**30))
    return out, cpu

med = lambda v: statistics.median(v) if v else None
fmt = lambda v, f="%.0f": "-" if v is None else f % v
table = []

def add(work, x, p, peer, unit, target):
    ratio = x / p if x and p else None
    met = "-" if ratio is None or target is None else ("met" if ratio >= target else "MISSED")
    table.append([work, "%s %s" % (fmt(x), unit), "%s %s" % (peer, fmt(p)), fmt(ratio, "%.2fx"),
                  "-" if target is None else ">= %.1fx" % target, met])

cpu_up, cpu_down = {}, {}
for proto, peer in (("h1", "nginx"), ("h2", "nginx"), ("h3", "gtlsserver")):
    x, xc = speeds("put", "xferd", proto); p, pc = speeds("put", peer, proto)
    if x or p:
        add("PUT %s" % proto, med(x), med(p), peer, "MB/s", 1.0)
    cpu_up[proto] = med(xc)
    if med(xc) and med(pc):
        # Server CPU (process and children) per GiB stored; the peer neither hashes nor syncs.
        table.append(["CPU s/GiB PUT %s" % proto, "%.2f" % med(xc), "%s %.2f" % (peer, med(pc)),
                      "-", "-", "-"])
for proto in ("h1", "h2", "h3"):
    x, xc = speeds("get", "xferd", proto)
    cpu_down[proto] = med(xc)
    for peer in (("gtlsserver", "caddy") if proto == "h3" else ("nginx", "caddy")):
        p, _ = speeds("get", peer, proto)
        if x or p:
            # Targets: h3 >= 1.0x gtlsserver; h1 and h2 >= 1.2x nginx and caddy; h3 vs caddy shown.
            tgt = {"gtlsserver": 1.0, "nginx": 1.2}.get(peer, None if proto == "h3" else 1.2)
            add("GET %s" % proto, med(x), med(p), peer, "MB/s", tgt)
sm = [l.rstrip("\n").split("\t") for l in open(small) if l.strip()]
def rps(srv, mode):
    return med([float(r[3]) for r in sm if r[0] == srv and r[1] == mode and r[4] == r[5] and float(r[3]) > 0])
def us_per_req(srv, mode):
    # Server CPU (process and children) per request; 0 ticks: not measured.
    v = [int(r[6]) / clk * 1e6 / int(r[5]) for r in sm
         if r[0] == srv and r[1] == mode and r[4] == r[5] and len(r) > 6 and int(r[6]) > 0]
    return med(v)
for mode, peer, tgt in (("h1", "nginx", 1.0), ("h2", "nginx", 1.0), ("h3", "caddy", 2.0), ("h3", "gtlsserver", None)):
    x, p = rps("xferd", mode), rps(peer, mode)
    if x or p:
        add("4 KiB GET %s" % mode, x, p, peer, "req/s", tgt)
    xc, pc = us_per_req("xferd", mode), us_per_req(peer, mode)
    if xc and pc:
        # Lower is better: the ratio is the peer's CPU per request over xferd's.
        table.append(["CPU us/req 4 KiB GET %s" % mode, "%.1f" % xc, "%s %.1f" % (peer, pc),
                      "%.2fx" % (pc / xc), "-", "-"])
if tus not in ("-", ""):
    t = tusmed.split()
    table.append(["tus %s" % "tus-js-client", "%s MB/s" % (t[1] if len(t) > 1 else "?"),
                  "@tus/server %s" % (t[0] if t else "?"), "%sx" % tus, ">= 1.0x",
                  "met" if float(tus) >= 1.0 else "MISSED"])
for proto in ("h1", "h2", "h3"):
    u, d = cpu_up.get(proto), cpu_down.get(proto)
    if u is not None and d is not None and d > 0:
        table.append(["CPU s/GiB PUT %s" % proto, "%.2f" % u, "own GET %.2f" % d, "%.2fx" % (u / d), "<= 1.5x",
                      "met" if u / d <= 1.5 else "MISSED"])
for l in open(memr):
    case, detail, kib = l.rstrip("\n").split("\t")
    mib = int(kib or 0) / 1024
    bound = {"slow": 256, "idle": 512}.get(case, 64)
    name = {"slow": "RSS, slow uploads", "idle": "RSS, idle connections"}.get(case, "RSS, " + case)
    extra, complete = "", True
    if case in ("slow", "idle"):
        try:
            d = json.loads(detail)
            if case == "slow":
                extra = " (%s/%s created)" % (d.get("created"), d.get("uploads"))
                complete = d.get("created") == d.get("uploads")
            else:
                extra = " (%s up, %s closed by server)" % (d.get("up"), d.get("closed_by_server"))
                complete = d.get("up") == d.get("asked") and d.get("closed_by_server") == 0
        except ValueError:
            extra, complete = " (load failed)", False
    # A bound met by refusing the load is not met.
    met = "met" if 0 < mib < bound and complete else "MISSED"
    table.append([name, "%.1f MiB%s" % (mib, extra), "-", "-", "< %d MiB" % bound, met])
hdr = ["work", "xferd", "peer", "ratio", "target", "result"]
w = [max(len(str(r[i])) for r in table + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
print(line(hdr)); print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in table:
    print(line(r))
EOF
