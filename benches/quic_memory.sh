#!/usr/bin/env bash
# QUIC memory benchmark (not a test): peak RSS of xferd while xferd's own client uploads
# over HTTP/3 at full speed on loopback (issue 15: "QUIC memory under a fast uploader").
#
#   benches/quic_memory.sh [XFERD] [BEFORE_XFERD]
#
# XFERD defaults to target/release/xferd of this repo. For each N in COUNTS, a fresh server,
# N concurrent `xferd upload --http 3` processes of one SIZE_MB MiB file (signed v3 PUTs to
# different paths), and the server's VmHWM (peak RSS, MiB) and the aggregate rate (MB/s,
# 10^6 bytes, N x size / wall time of the slowest). Each binary uploads with its own client
# unless CLIENT names one. With BEFORE_XFERD the same rows run on it first and a ratio
# table (after / before) follows.
#
# Env: SIZE_MB (1024), COUNTS ("1 8"), RUNS (1; the row keeps the median), CLIENT,
#      TMPDIR (parent of the temp dir; needs SIZE_MB x (1 + max N) MiB free), KEEP_WORK=1.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, stop_pid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SIZE_MB=${SIZE_MB:-1024}
COUNTS=${COUNTS:-1 8}
RUNS=${RUNS:-1}
SECRET="bench-secret-$RANDOM$RANDOM"
AFTER=$(readlink -f "${1:-$REPO/target/release/xferd}")
BEFORE=${2:+$(readlink -f "$2")}
for b in "$AFTER" ${BEFORE:+"$BEFORE"}; do
    [ -x "$b" ] || { echo "no xferd binary at $b (cargo build --release)" >&2; exit 69; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-quicmem.XXXXXX")
XPID=""
cleanup() {
    local rc=$?
    stop_pid "$XPID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

maxn=1
for n in $COUNTS; do [ "$n" -gt "$maxn" ] && maxn=$n; done
need_mb=$((SIZE_MB * (1 + maxn) + 64))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
    echo "not enough disk in $WORK: need $need_mb MB, have $avail_mb MB" >&2
    exit 1
fi
SRC="$WORK/file.bin"
head -c $((SIZE_MB << 20)) /dev/urandom >"$SRC"

vm_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# start_server BINARY: a fresh xferd on a free port, defaults otherwise; sets XPID, XPORT.
start_server() {
    XPORT=$(free_port)
    rm -rf "$WORK/xdata" "$WORK/state"
    cat >"$WORK/xferd.toml" <<EOF
[server]
listen = "127.0.0.1:$XPORT"
storage_path = "$WORK/xdata"
state_path = "$WORK/state"
max_upload_size = "4GB"

[security]
secret = "$SECRET"
EOF
    "$1" serve --config "$WORK/xferd.toml" >>"$WORK/xferd.log" 2>&1 &
    XPID=$!
    for _ in $(seq 1 150); do
        kill -0 "$XPID" 2>/dev/null || break
        if [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' \
            "https://127.0.0.1:$XPORT/health" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "xferd did not start; log:" >&2
    tail -n 20 "$WORK/xferd.log" >&2
    exit 1
}

# one_row BINARY N: prints "peak_MiB MB/s" for N concurrent uploads.
one_row() {
    local bin=$1 n=$2 client=${CLIENT:-$1} i url t0 t1 failed=0 pids=()
    start_server "$bin"
    t0=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
        url=$("$bin" sign --secret "$SECRET" --method PUT --path "q/$i.bin" \
            --base-url "https://127.0.0.1:$XPORT/")
        timeout 900 "$client" upload --http 3 --insecure --quiet "$SRC" "$url" \
            --state "$WORK/state.$i" >"$WORK/up.$i.out" 2>"$WORK/up.$i.err" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed=1; done
    t1=$(date +%s.%N)
    local hwm
    hwm=$(vm_hwm_kib "$XPID")
    stop_pid "$XPID"; XPID=""
    if [ "$failed" = 1 ]; then
        echo "an upload failed:" >&2
        cat "$WORK"/up.*.err >&2
        exit 1
    fi
    for i in $(seq 1 "$n"); do
        [ "$(stat -c %s "$WORK/xdata/q/$i.bin" 2>/dev/null || echo 0)" = $((SIZE_MB << 20)) ] \
            || { echo "upload $i incomplete" >&2; exit 1; }
    done
    rm -rf "$WORK/xdata" "$WORK"/state.* "$WORK"/up.*
    awk -v k="$hwm" -v n="$n" -v s="$SIZE_MB" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.0f %.0f\n", k / 1024, n * s * 1048576 / 1e6 / (t1 - t0) }'
}

# rows BINARY LABEL: one line per N, the median of RUNS (by MB/s) with its peak.
declare -A PEAK RATE
rows() {
    local bin=$1 label=$2 n r
    for n in $COUNTS; do
        : >"$WORK/runs"
        for r in $(seq 1 "$RUNS"); do one_row "$bin" "$n" >>"$WORK/runs"; done
        read -r PEAK[$label.$n] RATE[$label.$n] < <(sort -k2 -n "$WORK/runs" | awk -v m=$(((RUNS + 1) / 2)) 'NR == m')
        printf '%-7s %2d x %5d MiB  peak RSS %5d MiB  %6d MB/s\n' "$label" "$n" "$SIZE_MB" \
            "${PEAK[$label.$n]}" "${RATE[$label.$n]}"
    done
}

COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "== xferd QUIC memory: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $COMMIT, nproc $(nproc), runs $RUNS"
echo "   after: $AFTER${BEFORE:+; before: $BEFORE}; client: ${CLIENT:-the server binary}"
[ -n "$BEFORE" ] && rows "$BEFORE" before
rows "$AFTER" after
if [ -n "$BEFORE" ]; then
    for n in $COUNTS; do
        awk -v n="$n" -v pb="${PEAK[before.$n]}" -v pa="${PEAK[after.$n]}" \
            -v rb="${RATE[before.$n]}" -v ra="${RATE[after.$n]}" \
            'BEGIN { printf "ratio   %2d x  peak RSS after/before %.2f  MB/s after/before %.2f\n", n, pa / pb, ra / rb }'
    done
fi
