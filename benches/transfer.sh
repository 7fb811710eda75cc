#!/usr/bin/env bash
# Throughput benchmark (not a test): xferd against caddy, same file, same client, same run.
#
#   benches/transfer.sh [/path/to/xferd]        (default: target/release/xferd of this repo)
#
# For each of h1, h2 (Debian curl) and h3 (pycurl, HTTP/3 only): RUNS signed PUT uploads to
# xferd, RUNS downloads from xferd and RUNS from caddy (interleaved), medians in MB/s
# (1 MB = 10^6 bytes), peak RSS of xferd during the uploads (xferd is restarted per protocol,
# VmRSS polled every 50 ms, plus VmHWM), and server CPU seconds per GiB.
# Without an xferd binary only the caddy half runs.
#
# Env: SIZE_MB (default 1024), RUNS (default 3), PROTOCOLS (default "h1 h2 h3"),
#      PYTHON (default python3), KEEP_WORK=1 keeps the temp dir, TMPDIR picks its parent.
# Needs interop/http/install.sh (curl, caddy, pycurl with HTTP/3).
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
SECRET="bench-secret-$RANDOM$RANDOM"
XFER_TIMEOUT=900   # one transfer, seconds

XFERD=${1:-$REPO/target/release/xferd}
HAVE_XFERD=1
if [ -x "$XFERD" ] && "$XFERD" serve --help >/dev/null 2>&1; then
    XFERD=$(readlink -f "$XFERD")
else
    echo "# note: no usable xferd at '$XFERD' (needs 'xferd serve'): running the caddy half only" >&2
    HAVE_XFERD=0
fi
for tool in curl caddy timeout "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run interop/http/install.sh" >&2; exit 69; }
done
"$PY" -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' \
    || { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-bench.XXXXXX")
XPID=""
CPID=""
SAMPLER=""
cleanup() {
    local rc=$?
    stop_pid "$SAMPLER"
    stop_pid "$XPID"
    stop_pid "$CPID"
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Disk: the source file (hard-linked into caddy's root) + RUNS uploads per protocol.
nproto=$(wc -w <<<"$PROTOCOLS")
need_mb=$((SIZE_MB * (1 + HAVE_XFERD * RUNS * nproto) + 64))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
    echo "not enough disk in $WORK: need $need_mb MB, have $avail_mb MB" >&2
    exit 1
fi


# ------------------------------------------------------------------ the file
SIZE=$((SIZE_MB * 1024 * 1024))
mkdir -p "$WORK/src" "$WORK/caddyroot" "$WORK/xdata" "$WORK/home" "$WORK/xdg/data" "$WORK/xdg/config"
SRC="$WORK/src/file.bin"
echo "# creating a $SIZE_MB MiB random file" >&2
head -c "$SIZE" /dev/urandom >"$SRC"
ln "$SRC" "$WORK/caddyroot/file.bin" 2>/dev/null || cp "$SRC" "$WORK/caddyroot/file.bin"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

# ------------------------------------------------------------------ caddy
CPORT=$(free_port)
caddy_start "$WORK" "$CPORT" "$WORK/caddyroot" internal
CPID=$CADDY_PID
ready=0
for _ in $(seq 1 100); do
    kill -0 "$CPID" 2>/dev/null || break
    if [ "$(curl -sk --connect-timeout 1 --max-time 3 -r 0-0 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$CPORT/file.bin" || true)" = 206 ] \
        && timeout 10 "$PY" "$H3" --timeout 5 --expect-status 206 get "https://127.0.0.1:$CPORT/file.bin" --range 0-0 >/dev/null 2>&1; then
        ready=1; break
    fi
    sleep 0.2
done
if [ "$ready" != 1 ]; then
    echo "caddy did not serve h1+h3 on 127.0.0.1:$CPORT within 20 s; log:" >&2
    tail -n 30 "$WORK/caddy.log" >&2
    exit 1
fi

# ------------------------------------------------------------------ xferd
XPORT=""
start_xferd() {
    XPORT=$(free_port)
    cat >"$WORK/xferd.toml" <<EOF
[server]
listen = "127.0.0.1:$XPORT"
storage_path = "$WORK/xdata"
max_upload_size = "2GB"

[security]
secret = "$SECRET"
EOF
    "$XFERD" serve --config "$WORK/xferd.toml" >>"$WORK/xferd.log" 2>&1 &
    XPID=$!
    for _ in $(seq 1 150); do
        kill -0 "$XPID" 2>/dev/null || break
        if [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$XPORT/health" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "xferd did not answer /health on 127.0.0.1:$XPORT within 30 s; log:" >&2
    tail -n 30 "$WORK/xferd.log" >&2
    exit 1
}
sign_put() {
    if "$XFERD" sign --help >/dev/null 2>&1; then
        timeout 10 "$XFERD" sign --config "$WORK/xferd.toml" --scheme v3 --method PUT --path "$1" \
            --size "$SIZE" --expires 3600
    else
        "$PY" "$SIGN_PY" sign --secret "$SECRET" --base "https://127.0.0.1:$XPORT" --method PUT --path "$1"
    fi
}

# Peak RSS sampler: max VmRSS (kB) every 50 ms while $WORK/sampling exists.
rss_sampler() {
    local pid=$1 out=$2 max=0 k v _
    local deadline=$((SECONDS + 7200))
    while [ -e "$WORK/sampling" ] && [ "$SECONDS" -lt "$deadline" ]; do
        while read -r k v _; do
            if [ "$k" = "VmRSS:" ]; then
                [ "$v" -gt "$max" ] && max=$v
                break
            fi
        done <"/proc/$pid/status" 2>/dev/null || break
        echo "$max" >"$out"
        sleep 0.05
    done
    echo "$max" >"$out"
}
vm_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------ transfers
RESULTS="$WORK/results.tsv"   # proto kind run status bytes seconds server_cpu_ticks
: >"$RESULTS"

# transfer proto kind(up|xdown|cdown) url run server_pid
transfer() {
    local proto=$1 kind=$2 url=$3 run=$4 spid=$5 line status secs bytes c0 c1
    c0=$(cpu_ticks "$spid")
    local k=down
    [ "$kind" = up ] && k=up
    read -r status secs bytes <<<"$(measure_transfer "$proto" "$k" "$url" "$SRC" "$WORK/curl.err" "$WORK/resp.body" "$XFER_TIMEOUT")"
    c1=$(cpu_ticks "$spid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proto" "$kind" "$run" "${status:-0}" "${bytes:-0}" "${secs:-0}" "$((c1 - c0))" >>"$RESULTS"
    local want=200
    [ "$kind" = up ] && want=201
    if [ "${status:-0}" != "$want" ] || [ "${bytes%.*}" != "$SIZE" ]; then
        echo "# WARNING: $proto $kind run $run: status ${status:-?} (want $want), ${bytes:-?} bytes (want $SIZE) for $url" >&2
        head -c 600 "$WORK/curl.err" >&2 || true
        [ "$kind" = up ] && head -c 400 "$WORK/resp.body" >&2 2>/dev/null || true
        echo >&2
    fi
    echo "#   $proto $kind run $run: status $status, $(awk -v b="${bytes:-0}" -v s="${secs:-0}" 'BEGIN { if (s > 0) printf "%.0f MB/s", b / s / 1e6; else print "-" }')" >&2
}

first_url=""
RSSFILE="$WORK/rss.tsv"   # proto max_vmrss_kb vmhwm_kb
: >"$RSSFILE"
INTEGRITY="$WORK/integrity.tsv"
: >"$INTEGRITY"
CADDY_URL="https://127.0.0.1:$CPORT/file.bin"

for proto in $PROTOCOLS; do
    echo "# $proto" >&2
    if [ "$HAVE_XFERD" = 1 ]; then
        start_xferd
        touch "$WORK/sampling"
        rss_sampler "$XPID" "$WORK/rss.$proto" &
        SAMPLER=$!
        first_url=""
        for run in $(seq 1 "$RUNS"); do
            url=$(sign_put "bench/$proto-$run.bin")
            [ -n "$first_url" ] || first_url=${url%%\?*}
            transfer "$proto" up "$url" "$run" "$XPID"
        done
        hwm=$(vm_hwm "$XPID")
        rm -f "$WORK/sampling"
        wait "$SAMPLER" 2>/dev/null || true
        SAMPLER=""
        printf '%s\t%s\t%s\n' "$proto" "$(cat "$WORK/rss.$proto" 2>/dev/null || echo 0)" "${hwm:-0}" >>"$RSSFILE"
    fi
    for run in $(seq 1 "$RUNS"); do
        if [ "$HAVE_XFERD" = 1 ]; then
            transfer "$proto" xdown "$first_url" "$run" "$XPID"
        fi
        transfer "$proto" cdown "$CADDY_URL" "$run" "$CPID"
    done
    if [ "$HAVE_XFERD" = 1 ]; then
        # Untimed: the stored upload has the right bytes.
        got=$(curl -sk --http1.1 --max-time "$XFER_TIMEOUT" "$first_url" | sha256sum | cut -d' ' -f1 || true)
        printf '%s\t%s\n' "$proto" "$([ "$got" = "$SRC_SHA" ] && echo ok || echo "MISMATCH $got")" >>"$INTEGRITY"
        stop_pid "$XPID"
        XPID=""
    fi
done

# ------------------------------------------------------------------ report
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "none (no commit yet)")
if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n1)" ]; then COMMIT="$COMMIT+dirty"; fi
{
    echo "== xferd transfer benchmark"
    echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:      $COMMIT"
    echo "xferd:       $([ "$HAVE_XFERD" = 1 ] && echo "$XFERD" || echo "not run")"
    echo "nproc:       $(nproc)"
    echo "udp buffers: $(sysctl -n net.core.rmem_max 2>/dev/null | sed 's/^/net.core.rmem_max = /'), $(sysctl -n net.core.wmem_max 2>/dev/null | sed 's/^/net.core.wmem_max = /')"
    echo "file:        $SIZE_MB MiB ($SIZE bytes) random, page cache warm, loopback 127.0.0.1"
    echo "runs:        $RUNS per cell, median; MB/s = 10^6 bytes/s; h1/h2 xferd and caddy downloads interleaved"
    echo "clients:     h1/h2 $(curl --version | head -n1 | cut -d' ' -f1-2) (Debian); h3 $("$PY" -c 'import pycurl; print(pycurl.version.split()[0], pycurl.version.split()[1])') ngtcp2, HTTP/3 only"
    echo "peer:        caddy $(caddy version 2>/dev/null | cut -d' ' -f1) file_server, tls internal"
} >"$WORK/report.txt"
"$PY" - "$RESULTS" "$RSSFILE" "$INTEGRITY" "$SIZE" "$CLK_TCK" "$PROTOCOLS" "$HAVE_XFERD" >>"$WORK/report.txt" <<'EOF'
import statistics, sys
results, rssfile, integ, size, clk, protos, have_x = sys.argv[1:8]
size = int(size); clk = int(clk); protos = protos.split(); have_x = have_x == "1"
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
rss = {l.split("\t")[0]: l.rstrip("\n").split("\t")[1:] for l in open(rssfile) if l.strip()}
integrity = {l.split("\t")[0]: l.rstrip("\n").split("\t")[1] for l in open(integ) if l.strip()}
want = {"up": "201", "xdown": "200", "cdown": "200"}

def cell(proto, kind):
    ok = [r for r in rows if r[0] == proto and r[1] == kind and r[3] == want[kind]
          and int(float(r[4])) == size and float(r[5]) > 0]
    allr = [r for r in rows if r[0] == proto and r[1] == kind]
    speeds = [size / float(r[5]) / 1e6 for r in ok]
    cpu = [int(r[6]) / clk / (size / 2**30) for r in ok]
    return (statistics.median(speeds) if speeds else None, speeds, len(allr) - len(ok),
            statistics.median(cpu) if cpu else None)

def f(v, fmt="%.0f"):
    return "-" if v is None else fmt % v

targets = {"h1": 1.0, "h2": 1.0, "h3": 3.0}
hdr = ["protocol", "xferd upload MB/s", "xferd download MB/s", "caddy download MB/s",
       "ratio xferd/caddy", "target", "peak RSS upload MiB", "target"]
table = []
details = []
for p in protos:
    up, ups, upf, upc = cell(p, "up")
    xd, xds, xdf, xdc = cell(p, "xdown")
    cd, cds, cdf, cdc = cell(p, "cdown")
    ratio = xd / cd if xd and cd else None
    t = targets.get(p, 1.0)
    tr = "-" if ratio is None else (">= %.1fx %s" % (t, "met" if ratio >= t else "MISSED"))
    peak = None
    if p in rss:
        peak = max(int(rss[p][0] or 0), int(rss[p][1] or 0)) / 1024
    trss = "-" if peak is None else ("< 64 %s" % ("met" if peak < 64 else "MISSED"))
    table.append([p, f(up), f(xd), f(cd), f(ratio, "%.2fx"), tr, f(peak, "%.1f"), trss])
    runs = lambda s: "/".join("%.0f" % x for x in s) or "-"
    details.append("%s: runs MB/s  up %s  xferd down %s  caddy down %s%s%s" % (
        p, runs(ups), runs(xds), runs(cds),
        "" if not (upf or xdf or cdf) else "  (failed runs: up %d, xferd down %d, caddy down %d)" % (upf, xdf, cdf),
        ("  integrity of stored upload: %s" % integrity[p]) if p in integrity else ""))
    details.append("%s: server CPU s/GiB (median)  xferd up %s  xferd down %s  caddy down %s%s" % (
        p, f(upc, "%.2f"), f(xdc, "%.2f"), f(cdc, "%.2f"),
        ("  RSS: max VmRSS %.1f MiB, VmHWM %.1f MiB" % (int(rss[p][0] or 0) / 1024, int(rss[p][1] or 0) / 1024)) if p in rss else ""))
w = [max(len(str(r[i])) for r in table + [hdr]) for i in range(len(hdr))]
line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
print()
print(line(hdr))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in table:
    print(line(r))
print()
print("targets: h3 download >= 3x caddy h3; h1/h2 download >= 1.0x caddy; peak RSS during upload < 64 MiB")
for d in details:
    print(d)
EOF
cat "$WORK/report.txt"
