#!/usr/bin/env bash
# Benchmark (not a test): the adaptive I/O engine against a fixed 32 KB buffer, same binary,
# same clients, same file, same run.
#
#   benches/adaptive.sh [/path/to/xferd]        (default: target/release/xferd of this repo)
#
# Two xferd instances run side by side from generated configs that differ only in
# [performance]:
#   adaptive: adaptive_buffers = true (every other key at its default)
#   fixed:    adaptive_buffers = false, min_buffer_size = max_buffer_size = "32KB"
# For each of h1, h2 (Debian curl) and h3 (pycurl, HTTP/3 only), both instances are started
# fresh; RUNS signed PUT uploads go to each, interleaved (run 1 adaptive first, run 2 fixed
# first, ...), then RUNS GET downloads of each instance's first upload, interleaved the same
# way. The table shows MB/s medians (1 MB = 10^6 bytes) and the ratio adaptive/fixed, plus
# server CPU s/GiB and each instance's VmHWM.
#
# Env: SIZE_MB (default 1024), RUNS (default 3), PROTOCOLS (default "h1 h2 h3"),
#      PYTHON (default python3), KEEP_WORK=1 keeps the temp dir, TMPDIR picks its parent,
#      NO_PERF_KEYS=1 leaves [performance] out of both configs (a binary without those keys:
#      both instances are then identical, which checks the mechanics and the noise floor).
# Needs interop/http/install.sh (curl, pycurl with HTTP/3).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port, cpu_ticks, stop_pid

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
H3="$REPO/interop/http/h3_client.py"
SIGN_PY="$REPO/interop/http/v3sign.py"
PY=${PYTHON:-python3}
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
PROTOCOLS=${PROTOCOLS:-h1 h2 h3}
NO_PERF_KEYS=${NO_PERF_KEYS:-0}
SECRET="bench-secret-$RANDOM$RANDOM"
XFER_TIMEOUT=900   # one transfer, seconds
ARMS="adaptive fixed"

XFERD=${1:-$REPO/target/release/xferd}
if [ -x "$XFERD" ] && "$XFERD" serve --help >/dev/null 2>&1; then
    XFERD=$(readlink -f "$XFERD")
else
    echo "no usable xferd at '$XFERD' (needs 'xferd serve')" >&2
    exit 69
fi
for tool in curl timeout sha256sum "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run interop/http/install.sh" >&2; exit 69; }
done
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-adaptive.XXXXXX")
declare -A XPID=() XPORT=()
cleanup() {
    local rc=$? a
    for a in $ARMS; do stop_pid "${XPID[$a]:-}"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Disk: the source file + the first upload per arm and protocol (later uploads are deleted
# once measured) + one upload in flight.
nproto=$(wc -w <<<"$PROTOCOLS")
need_mb=$((SIZE_MB * (2 + 2 * nproto) + 64))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
    echo "not enough disk in $WORK: need $need_mb MB, have $avail_mb MB" >&2
    exit 1
fi


SIZE=$((SIZE_MB * 1024 * 1024))
mkdir -p "$WORK/src"
SRC="$WORK/src/file.bin"
echo "# creating a $SIZE_MB MiB random file" >&2
head -c "$SIZE" /dev/urandom >"$SRC"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

perf_section() { # arm -> the [performance] section of its config
    [ "$NO_PERF_KEYS" = 1 ] && return 0
    case "$1" in
        adaptive) printf '[performance]\nadaptive_buffers = true\n' ;;
        fixed) printf '[performance]\nadaptive_buffers = false\nmin_buffer_size = "32KB"\nmax_buffer_size = "32KB"\n' ;;
    esac
}

write_config() { # arm port
    local dir="$WORK/$1"
    mkdir -p "$dir/data" "$dir/state"
    cat >"$dir/xferd.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
storage_path = "$dir/data"
state_path = "$dir/state"
max_upload_size = "$((SIZE_MB + 1))MB"

[security]
secret = "$SECRET"

$(perf_section "$1")
EOF
}

start_xferd() { # arm
    local arm=$1 dir="$WORK/$1" port pid
    port=$(free_port)
    write_config "$arm" "$port"
    if ! timeout 20 "$XFERD" check-config "$dir/xferd.toml" >"$dir/check.log" 2>&1; then
        echo "xferd rejects the $arm config ($dir/xferd.toml):" >&2
        sed 's/^/    /' "$dir/check.log" >&2
        [ "$NO_PERF_KEYS" = 1 ] || echo "(a binary without [performance] keys? NO_PERF_KEYS=1 runs without them)" >&2
        exit 1
    fi
    "$XFERD" serve --config "$dir/xferd.toml" >>"$dir/xferd.log" 2>&1 &
    pid=$!
    XPID[$arm]=$pid
    XPORT[$arm]=$port
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        if [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/health" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "xferd ($arm) did not answer /health on 127.0.0.1:$port within 30 s; log:" >&2
    tail -n 30 "$dir/xferd.log" >&2
    exit 1
}
sign_put() { # arm path
    if "$XFERD" sign --help >/dev/null 2>&1; then
        timeout 10 "$XFERD" sign --config "$WORK/$1/xferd.toml" --scheme v3 --method PUT --path "$2" \
            --size "$SIZE" --expires 3600
    else
        "$PY" "$SIGN_PY" sign --secret "$SECRET" --base "https://127.0.0.1:${XPORT[$1]}" --method PUT --path "$2"
    fi
}
vm_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Interleaving order of the two arms for run N: alternate who goes first.
order() { if [ $(($1 % 2)) = 1 ]; then echo "adaptive fixed"; else echo "fixed adaptive"; fi; }

RESULTS="$WORK/results.tsv"   # proto arm kind run status bytes seconds server_cpu_ticks
: >"$RESULTS"

# transfer proto arm kind(up|down) url run
transfer() {
    local proto=$1 arm=$2 kind=$3 url=$4 run=$5 spid=${XPID[$2]} line status secs bytes c0 c1
    local err="$WORK/client.err" body="$WORK/resp.body"
    : >"$err"
    c0=$(cpu_ticks "$spid")
    read -r status secs bytes <<<"$(measure_transfer "$proto" "$kind" "$url" "$SRC" "$err" "$body" "$XFER_TIMEOUT")"
    c1=$(cpu_ticks "$spid")
    bytes=${bytes:-0}; bytes=${bytes%.*}
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proto" "$arm" "$kind" "$run" "${status:-0}" "$bytes" "${secs:-0}" "$((c1 - c0))" >>"$RESULTS"
    local want=200
    [ "$kind" = up ] && want=201
    if [ "${status:-0}" != "$want" ] || [ "$bytes" != "$SIZE" ]; then
        echo "# WARNING: $proto $arm $kind run $run: status ${status:-?} (want $want), $bytes bytes (want $SIZE)" >&2
        head -c 600 "$err" >&2 || true
        [ "$kind" = up ] && head -c 400 "$body" >&2 2>/dev/null || true
        echo >&2
    fi
    echo "#   $proto $arm $kind run $run: status $status, $(awk -v b="$bytes" -v s="${secs:-0}" 'BEGIN { if (s > 0) printf "%.0f MB/s", b / s / 1e6; else print "-" }')" >&2
}

MEMFILE="$WORK/mem.tsv"          # proto arm vmhwm_kb
INTEGRITY="$WORK/integrity.tsv"  # proto arm ok|MISMATCH
BUFS="$WORK/buffers.txt"         # buffer gauges from /metrics, when served
: >"$MEMFILE"; : >"$INTEGRITY"; : >"$BUFS"

for proto in $PROTOCOLS; do
    echo "# $proto" >&2
    declare -A FIRST=()
    for arm in $ARMS; do start_xferd "$arm"; done
    for run in $(seq 1 "$RUNS"); do
        for arm in $(order "$run"); do
            url=$(sign_put "$arm" "bench/$proto-$run.bin")
            transfer "$proto" "$arm" up "$url" "$run"
            if [ "$run" = 1 ]; then
                FIRST[$arm]=${url%%\?*}
            else
                rm -f "$WORK/$arm/data/bench/$proto-$run.bin"   # measured; free the disk
            fi
        done
    done
    for run in $(seq 1 "$RUNS"); do
        for arm in $(order "$run"); do
            transfer "$proto" "$arm" down "${FIRST[$arm]}" "$run"
        done
    done
    for arm in $ARMS; do
        f="$WORK/$arm/data/bench/$proto-1.bin"
        got=$( [ -f "$f" ] && sha256sum "$f" | cut -d' ' -f1 || echo missing)
        printf '%s\t%s\t%s\n' "$proto" "$arm" "$([ "$got" = "$SRC_SHA" ] && echo ok || echo "MISMATCH ($got)")" >>"$INTEGRITY"
        printf '%s\t%s\t%s\n' "$proto" "$arm" "$(vm_hwm "${XPID[$arm]}")" >>"$MEMFILE"
        # The engine's own view, if this binary serves /metrics (informational).
        curl -sk --http1.1 --max-time 5 "https://127.0.0.1:${XPORT[$arm]}/metrics" 2>/dev/null \
            | grep -E '^xferd_(buffer_size_optimal_bytes|buffer_pool_bytes_in_use)' \
            | sed "s/^/$proto $arm: /" >>"$BUFS" || true
        stop_pid "${XPID[$arm]}"
        XPID[$arm]=""
        rm -rf "$WORK/$arm/data/bench"
    done
    unset FIRST
done

# ------------------------------------------------------------------ report
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none (no commit yet)")
if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n1)" ]; then COMMIT="$COMMIT+dirty"; fi
{
    echo "== xferd adaptive I/O benchmark"
    echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:      $COMMIT"
    echo "xferd:       $XFERD"
    echo "nproc:       $(nproc)"
    echo "udp buffers: $(sysctl -n net.core.rmem_max 2>/dev/null | sed 's/^/net.core.rmem_max = /'), $(sysctl -n net.core.wmem_max 2>/dev/null | sed 's/^/net.core.wmem_max = /')"
    echo "file:        $SIZE_MB MiB ($SIZE bytes) random, page cache warm, loopback 127.0.0.1"
    echo "runs:        $RUNS per cell, median; MB/s = 10^6 bytes/s; both instances up at once, runs interleaved, first arm alternating"
    echo "clients:     h1/h2 $(curl --version | head -n1 | cut -d' ' -f1-2) (Debian); h3 $("$PY" -c 'import pycurl; print(pycurl.version.split()[0], pycurl.version.split()[1])') ngtcp2, HTTP/3 only"
    if [ "$NO_PERF_KEYS" = 1 ]; then
        echo "arms:        NO_PERF_KEYS=1: no [performance] section in either config (identical servers: mechanics/noise check only)"
    else
        echo "arms:        adaptive = [performance] adaptive_buffers = true (defaults otherwise)"
        echo "             fixed    = [performance] adaptive_buffers = false, min_buffer_size = max_buffer_size = \"32KB\""
    fi
} >"$WORK/report.txt"
"$PY" - "$RESULTS" "$MEMFILE" "$INTEGRITY" "$SIZE" "$CLK_TCK" "$PROTOCOLS" >>"$WORK/report.txt" <<'EOF'
import statistics, sys
results, memfile, integ, size, clk, protos = sys.argv[1:7]
size = int(size); clk = int(clk); protos = protos.split()
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
mem = {(l.split("\t")[0], l.split("\t")[1]): l.rstrip("\n").split("\t")[2] for l in open(memfile) if l.strip()}
integrity = {(l.split("\t")[0], l.split("\t")[1]): l.rstrip("\n").split("\t")[2] for l in open(integ) if l.strip()}
want = {"up": "201", "down": "200"}

def cell(proto, arm, kind):
    allr = [r for r in rows if r[0] == proto and r[1] == arm and r[2] == kind]
    ok = [r for r in allr if r[4] == want[kind] and int(r[5]) == size and float(r[6]) > 0]
    speeds = [size / float(r[6]) / 1e6 for r in ok]
    cpu = [int(r[7]) / clk / (size / 2**30) for r in ok]
    return (statistics.median(speeds) if speeds else None, speeds, len(allr) - len(ok),
            statistics.median(cpu) if cpu else None)

f = lambda v, fmt="%.0f": "-" if v is None else fmt % v
hdr = ["protocol", "direction", "adaptive MB/s", "fixed 32KB MB/s", "ratio adaptive/fixed",
       "adaptive CPU s/GiB", "fixed CPU s/GiB"]
table, details = [], []
for p in protos:
    for kind, label in (("up", "upload"), ("down", "download")):
        a, as_, af, ac = cell(p, "adaptive", kind)
        x, xs, xf, xc = cell(p, "fixed", kind)
        table.append([p, label, f(a), f(x), f(a / x if a and x else None, "%.2fx"), f(ac, "%.2f"), f(xc, "%.2f")])
        runs = lambda s: "/".join("%.0f" % v for v in s) or "-"
        details.append("%s %s: runs MB/s  adaptive %s  fixed %s%s" % (
            p, label, runs(as_), runs(xs),
            "" if not (af or xf) else "  (failed runs: adaptive %d, fixed %d)" % (af, xf)))
    details.append("%s: stored upload integrity  adaptive %s, fixed %s;  VmHWM MiB  adaptive %s, fixed %s" % (
        p, integrity.get((p, "adaptive"), "-"), integrity.get((p, "fixed"), "-"),
        f(int(mem[(p, "adaptive")] or 0) / 1024 if (p, "adaptive") in mem else None, "%.1f"),
        f(int(mem[(p, "fixed")] or 0) / 1024 if (p, "fixed") in mem else None, "%.1f")))
w = [max(len(str(r[i])) for r in table + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
print()
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in table:
    print(line(r))
print()
for d in details:
    print(d)
EOF
if [ -s "$BUFS" ]; then
    echo "buffer gauges at the end of each protocol (from /metrics):" >>"$WORK/report.txt"
    sed 's/^/  /' "$BUFS" >>"$WORK/report.txt"
fi
cat "$WORK/report.txt"
