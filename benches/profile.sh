#!/usr/bin/env bash
# Where xferd's CPU goes (not a test, not a ratio: the companion of benches/compare.sh for
# deciding what to optimise). Starts the release server alone, and for each workload records
# it with `perf record` while one third-party client drives it, then prints the top symbols
# (self time, % of the server's samples), the split by thread (runtime workers, blocking
# pool, QUIC driver), and the server's CPU seconds per unit of work.
#
#   cargo build --release
#   bash benches/profile.sh [/path/to/xferd]
#
# Workloads (WORKLOADS picks a subset):
#   small-h1  h2load --h1 -n SMALL_N -c 16, 4 KiB GETs
#   small-h2  h2load -n 2xSMALL_N -c 16 -m 10, 4 KiB GETs
#   small-h3  oha --http-version 3 -z H3_SECS -c 16, 4 KiB GETs (oha with HTTP/3:
#             benches/install-peers.sh)
#   put-h1 put-h2  curl -T, one PUT_MB upload
#   put-h3 get-h3  pycurl HTTP/3, one PUT_MB upload / GET_MB download
#   get-h1 get-h2  curl, one GET_MB download
# Env: WORKLOADS (small-h1 small-h2 put-h2), SMALL_N (20000), PUT_MB (256), GET_MB (256),
#      H3_SECS (5), TOP (25), FREQ (perf -F, 1999), FLAME=1 (dwarf call graphs and an SVG
#      per workload, needs `inferno-flamegraph` from `cargo install inferno`), OUT (a
#      directory to keep the perf data and reports in; default a temporary one, removed),
#      PYTHON.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid, measure_transfer, oha_h3

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
H3="$REPO/interop/http/h3_client.py"
PY=${PYTHON:-python3}
WORKLOADS=${WORKLOADS:-small-h1 small-h2 put-h2}
SMALL_N=${SMALL_N:-20000}
H3_SECS=${H3_SECS:-5}
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")  # for oha_h3
PUT_MB=${PUT_MB:-256}
GET_MB=${GET_MB:-256}
TOP=${TOP:-25}
FREQ=${FREQ:-1999}
SECRET="profile-secret-$RANDOM$RANDOM"

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "no xferd binary at '$XFERD' (cargo build --release)" >&2; exit 64; }
XFERD=$(readlink -f "$XFERD")
for tool in perf curl h2load openssl timeout "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 69; }
done
if [ "${FLAME:-0}" = 1 ]; then
    command -v inferno-flamegraph >/dev/null || { echo "FLAME=1 needs inferno-flamegraph (cargo install inferno)" >&2; exit 69; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-profile.XXXXXX")
OUT=${OUT:-}
[ -n "$OUT" ] && mkdir -p "$OUT"
DATA=${OUT:-$WORK}
XPID=""
PERF=""
cleanup() {
    local rc=$?
    [ -n "$PERF" ] && kill -INT "$PERF" 2>/dev/null && wait "$PERF" 2>/dev/null
    stop_pid "$XPID"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "# $*" >&2; }

mkdir -p "$WORK"/{src,xdata/get,xstate}
head -c $((PUT_MB << 20)) /dev/urandom >"$WORK/src/put.bin"
head -c $((GET_MB << 20)) /dev/urandom >"$WORK/xdata/get/get.bin"
head -c 4096 /dev/urandom >"$WORK/xdata/get/small.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

PORT=$(free_port)
cat >"$WORK/xferd.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/xdata"
state_path = "$WORK/xstate"
max_upload_size = "4GB"

[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[security]
secret = "$SECRET"
EOF
"$XFERD" serve --config "$WORK/xferd.toml" >>"$WORK/xferd.log" 2>&1 &
XPID=$!
for _ in $(seq 1 150); do
    [ "$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/health" || true)" = 200 ] && break
    kill -0 "$XPID" 2>/dev/null || { tail -n 20 "$WORK/xferd.log" >&2; exit 1; }
    sleep 0.2
done
sign() { "$XFERD" sign --config "$WORK/xferd.toml" --scheme v3 --method PUT --path "$1" --expires 2h; }
BASE="https://127.0.0.1:$PORT"

echo "== xferd profile: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown), $XFERD"
echo "machine: nproc $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
n=0
for w in $WORKLOADS; do
    n=$((n + 1))
    data="$DATA/$w.perf.data"
    callgraph=()
    [ "${FLAME:-0}" = 1 ] && callgraph=(--call-graph dwarf,16384)
    perf record -q -F "$FREQ" "${callgraph[@]}" -p "$XPID" -o "$data" >/dev/null 2>"$WORK/perf.err" &
    PERF=$!
    sleep 0.5
    c0=$(cpu_ticks "$XPID")
    t0=$(date +%s.%N)
    unit=""
    case $w in
        small-h1|small-h2)
            if [ "$w" = small-h1 ]; then
                out=$(timeout 600 h2load --h1 -n "$SMALL_N" -c 16 "$BASE/get/small.bin" 2>&1 || true)
                reqs=$SMALL_N
            else
                out=$(timeout 600 h2load -n $((2 * SMALL_N)) -c 16 -m 10 "$BASE/get/small.bin" 2>&1 || true)
                reqs=$((2 * SMALL_N))
            fi
            what=$(grep -E '^(finished in|requests:)' <<<"$out" | tr '\n' ' ')
            unit="per 10k requests"; per=$((reqs / 10000)); [ "$per" -gt 0 ] || per=1
            ;;
        small-h3)
            read -r reqs bad <<<"$(oha_h3 "$H3_SECS" "$BASE/get/small.bin")"
            what="oha -z ${H3_SECS}s -c 16: $reqs responses 200, $bad failed"
            unit="per 10k requests"; per=$(awk -v r="$reqs" 'BEGIN {print (r > 0 ? r : 1) / 10000}')
            ;;
        put-h1|put-h2|put-h3)
            read -r status secs bytes <<<"$(measure_transfer "${w#put-}" up "$(sign "put/$w-$n.bin")" "$WORK/src/put.bin" "$WORK/err" "$WORK/body" 900)"
            what="status $status, $bytes bytes in $secs s"
            unit="per GiB"; per=$(awk -v b="$PUT_MB" 'BEGIN {print b / 1024}')
            rm -rf "$WORK/xdata/put"
            ;;
        get-h1|get-h2|get-h3)
            read -r status secs bytes <<<"$(measure_transfer "${w#get-}" down "$BASE/get/get.bin" "" "$WORK/err" "$WORK/body" 900)"
            what="status $status, $bytes bytes in $secs s"
            unit="per GiB"; per=$(awk -v b="$GET_MB" 'BEGIN {print b / 1024}')
            ;;
        *) echo "unknown workload $w" >&2; exit 64 ;;
    esac
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$XPID")
    kill -INT "$PERF" 2>/dev/null || true
    wait "$PERF" 2>/dev/null || true
    PERF=""
    echo
    echo "== $w: $what"
    awk -v c=$((c1 - c0)) -v k="$CLK_TCK" -v t0="$t0" -v t1="$t1" -v per="$per" -v unit="$unit" \
        'BEGIN { s = c / k; printf "server CPU %.2f s over %.2f s wall (%.0f%% of one core), %.3f CPU-s %s\n", s, t1 - t0, 100 * s / (t1 - t0), s / per, unit }'
    echo "-- by thread"
    perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null | awk '/^ +[0-9]/ && n++ < 8' || true
    echo "-- top $TOP symbols (self)"
    perf report -i "$data" --no-children --sort dso,sym -g none --stdio 2>/dev/null | awk -v top="$TOP" '/^ +[0-9]/ && n++ < top' || true
    if [ "${FLAME:-0}" = 1 ]; then
        perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$DATA/$w.folded" 2>/dev/null || true
        inferno-flamegraph <"$DATA/$w.folded" >"$DATA/$w.svg" 2>/dev/null && echo "flame graph: $DATA/$w.svg"
    fi
    [ -n "$OUT" ] || rm -f "$data"
done
