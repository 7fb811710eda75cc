#!/usr/bin/env bash
# Benchmark (not a test) for resumable uploads, in one run on this machine:
#  1. a SIZE_MB file uploaded over ONE HTTP/3 connection as 8 parallel chunk streams
#     (/chunked-upload) against a single-stream HTTP/3 PUT, same client (`xferd upload`),
#     medians of RUNS; prints MB/s and the ratio (target >= 1.0x);
#  2. peak RSS (VmHWM) of a fresh xferd while 100 resumable (tus) uploads run concurrently
#     (target < 128 MiB).
# Usage: benches/resumable.sh [path/to/xferd]   (env: SIZE_MB=1024 RUNS=3 SESSIONS=100)
set -euo pipefail
XFERD=${1:-target/release/xferd}
XFERD=$(readlink -f "$XFERD")
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-100}
SERVER_ENV=${SERVER_ENV:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-resumable-bench.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # free_port

start_server() {
    PORT=$(free_port)
    rm -rf "$WORK/data" "$WORK/state"
    cat > "$WORK/xferd.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
storage_path = "$WORK/data"
state_path = "$WORK/state"
max_upload_size = "4GB"
[security]
secret = "bench-secret"
[resumable]
max_sessions_per_client = 1000
max_session_length = "4GB"
TOML
    $SERVER_ENV "$XFERD" serve --config "$WORK/xferd.toml" > "$WORK/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        curl -sk -o /dev/null "https://127.0.0.1:$PORT/health" && return 0
        sleep 0.1
    done
    echo "xferd did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}
stop_server() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; commit $(git -C "$REPO" rev-parse --short HEAD)"
echo "UDP buffers: $(sysctl -n net.core.rmem_max) rmem_max / $(sysctl -n net.core.wmem_max) wmem_max (xferd asks for 8 MiB)"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$WORK/file.bin"

start_server
single=(); multi=()
for i in $(seq "$RUNS"); do
    U=$("$XFERD" sign --config "$WORK/xferd.toml" --path "single$i.bin" --method PUT)
    single+=("$("$XFERD" upload "$WORK/file.bin" "$U" --ca "$WORK/state/cert.pem" --http 3 | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])')")
    U=$("$XFERD" sign --config "$WORK/xferd.toml" --path "multi$i.bin" --method POST)
    multi+=("$("$XFERD" upload "$WORK/file.bin" "$U" --ca "$WORK/state/cert.pem" --http 3 --streams 8 | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_s"])')")
    rm -f "$WORK"/data/single*.bin "$WORK"/data/multi*.bin
done
stop_server
s=$(printf '%s\n' "${single[@]}" | median); m=$(printf '%s\n' "${multi[@]}" | median)
printf '\n%-44s %10s\n' "HTTP/3 upload, ${SIZE_MB} MiB, one connection" "MB/s (median of $RUNS)"
printf '%-44s %10.0f   runs: %s\n' "single PUT stream" "$s" "${single[*]}"
printf '%-44s %10.0f   runs: %s\n' "8 parallel chunk streams (/chunked-upload)" "$m" "${multi[*]}"
python3 -c "print(f'ratio 8 streams / single: {$m/$s:.2f}x   (target >= 1.0x)')"

# 2. Memory with many concurrent resumable uploads (fresh process: VmHWM is its peak).
start_server
python3 - "$PORT" "$WORK/state/cert.pem" "$SESSIONS" "$XFERD" "$WORK/xferd.toml" <<'PY'
import http.client, ssl, subprocess, sys, threading, hashlib, os
port, ca, n, xferd, conf = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
PER, CHUNK = 16 << 20, 1 << 20
data = os.urandom(CHUNK)
errors = []
def one(i):
    try:
        url = subprocess.check_output([xferd, "sign", "--config", conf, "--path", f"mem/{i}.bin", "--method", "POST"], text=True).strip()
        pq = url.split(str(port), 1)[1]
        c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=120)
        c.request("POST", pq, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(PER)})
        r = c.getresponse(); r.read(); loc = r.getheader("Location")
        assert r.status == 201, r.status
        for off in range(0, PER, CHUNK):
            c.request("PATCH", loc, body=data, headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(off),
                      "Content-Type": "application/offset+octet-stream", "Content-Length": str(CHUNK)})
            r = c.getresponse(); r.read()
            assert r.status == 204, r.status
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{n} concurrent tus uploads of {PER >> 20} MiB in 1 MiB PATCHes: {n - len(errors)} completed, {len(errors)} failed {errors[:3]}")
PY
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
stop_server
printf 'peak RSS of xferd during %d concurrent resumable uploads: %.1f MiB   (target < 128 MiB)\n' "$SESSIONS" "$(echo "$hwm / 1024" | bc -l)"
