#!/usr/bin/env bash
# tus upload benchmark (not a test): xferd against @tus/server + @tus/file-store (the tus
# organisation's Node.js server), same file, same clients, same chunk size, same run.
#
#   benches/tus.sh [/path/to/xferd]        (default: target/release/xferd of this repo)
#
# Clients: tuspy (Python, requests) and tus-js-client (Node 20), both the tus org's own,
# through interop/resumable/tus_py.py and interop/resumable/node/tus_js.mjs. Each upload
# is a tus creation (POST) and PATCHes of CHUNK_MB; the time is taken inside the client
# from before the POST to the last 204 (interpreter start-up excluded).
# Servers, interleaved per run:
#   @tus/server   plain HTTP/1.1 on 127.0.0.1 (benches/tus/tus_server.mjs, FileStore on disk)
#   xferd http    xferd's plain_listen port: plain HTTP/1.1, like for like with @tus/server
#   xferd https   xferd's TLS port (HTTP/1.1 over TLS: both clients speak HTTP/1.1)
#   sink          benches/tus/sink.mjs: a tus endpoint that discards the bytes, the client's
#                 own ceiling on this machine (no server can be measured above it)
# The ratio is xferd http / @tus/server, per client (target >= 3x). Medians of RUNS,
# MB/s with 1 MB = 10^6 bytes, and server CPU seconds per GiB uploaded (utime+stime).
# Every stored upload is compared byte for byte with the source (outside the timing),
# then deleted.
#
# Env: SIZE_MB (default 1024), RUNS (default 3), CHUNK_MB (default 64), CLIENTS (default
#      "tuspy tus-js-client"), XFERD_CONF_EXTRA (TOML appended to xferd's config),
#      PYTHON (python3), NODE (node), KEEP_WORK=1, TMPDIR.
# Needs interop/resumable/install.sh (tuspy, tus-js-client, @tus/server, @tus/file-store).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
TUSPY="$REPO/interop/resumable/tus_py.py"
TUSJS="$REPO/interop/resumable/node/tus_js.mjs"
PEER="$HERE/tus/tus_server.mjs"
SINK="$HERE/tus/sink.mjs"
PY=${PYTHON:-python3}
NODE=${NODE:-node}
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
CHUNK_MB=${CHUNK_MB:-64}
CLIENTS=${CLIENTS:-tuspy tus-js-client}
SECRET="bench-secret-$RANDOM$RANDOM"
XFER_TIMEOUT=900   # one upload, seconds

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "no xferd binary at '$XFERD' (build it: cargo build --release)" >&2; exit 64; }
XFERD=$(readlink -f "$XFERD")
for tool in timeout cmp "$PY" "$NODE"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run interop/resumable/install.sh" >&2; exit 69; }
done
"$PY" -c 'import tusclient' 2>/dev/null || { echo "tuspy missing: run interop/resumable/install.sh" >&2; exit 69; }
[ -d "$REPO/interop/resumable/node/node_modules/tus-js-client" ] \
    || { echo "tus-js-client missing: run interop/resumable/install.sh" >&2; exit 69; }
if [ ! -d "$HERE/tus/node_modules/@tus/server" ] || [ ! -d "$HERE/tus/node_modules/@tus/file-store" ]; then
    echo "@tus/server missing: run interop/resumable/install.sh" >&2
    exit 69
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-tusbench.XXXXXX")
XPID=""
TPID=""
SPID=""
cleanup() {
    local rc=$?
    stop_pid "$XPID"
    stop_pid "$TPID"
    stop_pid "$SPID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"   # the source file and any upload left behind
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Disk: the source + one upload at a time (each is checked, then deleted) + slack.
need_mb=$((SIZE_MB * 3 + 64))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
    echo "not enough disk in $WORK: need $need_mb MB, have $avail_mb MB" >&2
    exit 1
fi

wait_http() { # url pid -> 0 when it answers 200 within 30 s
    for _ in $(seq 1 150); do
        kill -0 "$2" 2>/dev/null || return 1
        [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
        sleep 0.2
    done
    return 1
}

# ------------------------------------------------------------------ the file
SIZE=$((SIZE_MB * 1024 * 1024))
CHUNK=$((CHUNK_MB * 1024 * 1024))
mkdir -p "$WORK/src" "$WORK/tusstore" "$WORK/xdata" "$WORK/xstate" "$WORK/out"
SRC="$WORK/src/file.bin"
echo "# creating a $SIZE_MB MiB random file" >&2
head -c "$SIZE" /dev/urandom >"$SRC"

# ------------------------------------------------------------------ @tus/server
TPORT=$(free_port)
(cd "$HERE/tus" && exec "$NODE" "$PEER" "$TPORT" "$WORK/tusstore") >"$WORK/tus-server.log" 2>&1 &
TPID=$!
if ! wait_http "http://127.0.0.1:$TPORT/health" "$TPID"; then
    echo "@tus/server did not start on 127.0.0.1:$TPORT; log:" >&2
    tail -n 30 "$WORK/tus-server.log" >&2
    exit 1
fi

# ------------------------------------------------------------------ discard sink
SPORT=$(free_port)
"$NODE" "$SINK" "$SPORT" >"$WORK/sink.log" 2>&1 &
SPID=$!
if ! wait_http "http://127.0.0.1:$SPORT/health" "$SPID"; then
    echo "the discard sink did not start on 127.0.0.1:$SPORT; log:" >&2
    tail -n 30 "$WORK/sink.log" >&2
    exit 1
fi

# ------------------------------------------------------------------ xferd
XPORT=$(free_port)
PPORT=$(free_port)
CONF="$WORK/xferd.toml"
cat >"$CONF" <<EOF
[server]
listen = "127.0.0.1:$XPORT"
plain_listen = "127.0.0.1:$PPORT"
storage_path = "$WORK/xdata"
state_path = "$WORK/xstate"
max_upload_size = "$((SIZE_MB * 2 + 64))MB"

[security]
secret = "$SECRET"
EOF
# Extra TOML for experiments, e.g. XFERD_CONF_EXTRA=$'[resumable]\ncommit_every = "1GB"'.
if [ -n "${XFERD_CONF_EXTRA:-}" ]; then
    printf '\n%s\n' "$XFERD_CONF_EXTRA" >>"$CONF"
    echo "# xferd config extra: $XFERD_CONF_EXTRA" >&2
fi
"$XFERD" serve --config "$CONF" >"$WORK/xferd.log" 2>&1 &
XPID=$!
if ! wait_http "https://127.0.0.1:$XPORT/health" "$XPID" || ! wait_http "http://127.0.0.1:$PPORT/health" "$XPID"; then
    echo "xferd did not answer /health on https://127.0.0.1:$XPORT and http://127.0.0.1:$PPORT; log:" >&2
    tail -n 30 "$WORK/xferd.log" >&2
    exit 1
fi
if ! curl -sk -X OPTIONS -D - -o /dev/null "http://127.0.0.1:$PPORT/files/" | grep -qi '^tus-version:'; then
    echo "xferd does not answer OPTIONS /files/ with Tus-Version: no tus support in this build" >&2
    exit 1
fi
export NODE_EXTRA_CA_CERTS="$WORK/xstate/cert.pem" REQUESTS_CA_BUNDLE="$WORK/xstate/cert.pem"

# ------------------------------------------------------------------ one upload
# upload client server run -> appends "client server mbps cpu_s" to results; checks bytes.
N=0
upload() {
    local client=$1 server=$2 run=$3 endpoint pid name stored out rc=0 t0 t1
    N=$((N + 1))
    name="bench/$client-$server-$run-$N.bin"
    case $server in
        tus) endpoint="http://127.0.0.1:$TPORT/files/"; pid=$TPID ;;
        sink) endpoint="http://127.0.0.1:$SPORT/files/"; pid=$SPID ;;
        xferd-http) endpoint=$("$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$name" \
                        --expires 2h --base-url "http://127.0.0.1:$PPORT/"); pid=$XPID ;;
        xferd-https) endpoint=$("$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$name" \
                        --expires 2h); pid=$XPID ;;
    esac
    out="$WORK/out/$N.json"
    t0=$(cpu_ticks "$pid")
    case $client in
        tuspy) timeout "$XFER_TIMEOUT" "$PY" "$TUSPY" upload "$endpoint" "$SRC" --chunk-size "$CHUNK" \
                   --metadata filename=file.bin >"$out" 2>"$out.err" || rc=$? ;;
        tus-js-client) timeout "$XFER_TIMEOUT" "$NODE" "$TUSJS" upload "$endpoint" "$SRC" --chunk-size "$CHUNK" \
                   >"$out" 2>"$out.err" || rc=$? ;;
    esac
    t1=$(cpu_ticks "$pid")
    local secs url
    secs=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1]).get("seconds") or "")' "$out" 2>/dev/null || true)
    url=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1]).get("url") or "")' "$out" 2>/dev/null || true)
    if [ "$rc" != 0 ] || [ -z "$secs" ]; then
        echo "# $client -> $server run $run FAILED (exit $rc): $(head -c 600 "$out") $(tail -n 5 "$out.err")" >&2
        echo "$client $server FAIL FAIL" >>"$WORK/results"
        return 0
    fi
    case $server in
        tus) stored="$WORK/tusstore/${url##*/}" ;;
        sink) stored="$SRC" ;;   # nothing stored: the client's reported offset was checked
        *) stored="$WORK/xdata/$name" ;;
    esac
    if ! cmp -s "$SRC" "$stored"; then
        echo "# $client -> $server run $run: stored file $stored differs from the source (or is missing)" >&2
        echo "$client $server FAIL FAIL" >>"$WORK/results"
    else
        local mbps cpu
        mbps=$(awk -v s="$SIZE" -v t="$secs" 'BEGIN { printf "%.1f", s / 1e6 / t }')
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$SIZE" 'BEGIN { printf "%.2f", d / hz / (s / 1073741824) }')
        echo "$client $server $mbps $cpu" >>"$WORK/results"
        echo "# $client -> $server run $run: $secs s, $mbps MB/s, server $cpu CPU-s/GiB" >&2
    fi
    [ "$server" = sink ] || rm -f "$stored" "$stored.json"
}

: >"$WORK/results"
for run in $(seq 1 "$RUNS"); do
    for client in $CLIENTS; do
        for server in tus xferd-http xferd-https sink; do
            upload "$client" "$server" "$run"
        done
    done
done

# ------------------------------------------------------------------ report
median() { # values... (FAIL entries skipped) -> median or "-"
    printf '%s\n' "$@" | grep -v FAIL | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit+dirty"
ver() { "$NODE" -e 'console.log(require(process.argv[1] + "/package.json").version)' "$1" 2>/dev/null || echo "?"; }
echo
echo "tus upload benchmark: ${SIZE_MB} MiB random file (page cache), PATCH chunks of ${CHUNK_MB} MiB for both"
echo "clients and all servers, ${RUNS} runs interleaved, medians; MB/s with 1 MB = 10^6 bytes; loopback"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r)"
echo "xferd: commit $commit, $("$XFERD" --version 2>/dev/null | head -n1); tuspy $("$PY" -c 'import importlib.metadata as m; print(m.version("tuspy"))'),"
echo "  tus-js-client $(ver "$REPO/interop/resumable/node/node_modules/tus-js-client"), @tus/server $(ver "$HERE/tus/node_modules/@tus/server") + @tus/file-store $(ver "$HERE/tus/node_modules/@tus/file-store"), node $("$NODE" --version), $("$PY" --version)"
echo
printf '%-14s %-34s %12s %14s   %s\n' client server "MB/s median" "CPU-s/GiB" "runs (MB/s)"
label() { case $1 in tus) echo "@tus/server (HTTP/1.1)";; xferd-http) echo "xferd plain_listen (HTTP/1.1)";;
    xferd-https) echo "xferd TLS port (HTTP/1.1+TLS)";; sink) echo "discard sink = client ceiling";; esac; }
ratios=()
for client in $CLIENTS; do
    declare -A med=()
    for server in tus xferd-http xferd-https sink; do
        mapfile -t speeds < <(awk -v c="$client" -v s="$server" '$1 == c && $2 == s { print $3 }' "$WORK/results")
        mapfile -t cpus < <(awk -v c="$client" -v s="$server" '$1 == c && $2 == s { print $4 }' "$WORK/results")
        med[$server]=$(median "${speeds[@]}")
        printf '%-14s %-34s %12s %14s   %s\n' "$client" "$(label "$server")" "${med[$server]}" "$(median "${cpus[@]}")" "${speeds[*]}"
    done
    r=$(awk -v x="${med[xferd-http]}" -v t="${med[tus]}" 'BEGIN { if (x == "-" || t == "-" || t == 0) print "n/a"; else printf "%.2fx", x / t }')
    c=$(awk -v x="${med[sink]}" -v t="${med[tus]}" 'BEGIN { if (x == "-" || t == "-" || t == 0) print "n/a"; else printf "%.2fx", x / t }')
    ratios+=("$client $r $c")
    unset med
done
echo
for r in "${ratios[@]}"; do
    read -r cl rx rc <<<"$r"
    echo "ratio xferd plain HTTP / @tus/server, $cl: $rx (target >= 3x; the client's ceiling allows at most $rc)"
done
