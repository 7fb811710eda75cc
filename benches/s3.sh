#!/usr/bin/env bash
# S3 backend benchmark (not a test): one run, one private SeaweedFS, the same files and
# clients for every cell.
#
#   benches/s3.sh [/path/to/xferd]        (default: target/release/xferd of this repo)
#
# Starts SeaweedFS (`weed mini`, loopback, data in a temp dir) and a Redis, then measures:
#   1. PUT of SIZE_MB over h1 (curl), h2 (curl), h3 (pycurl): xferd s3 vs xferd fs (the
#      same binary on local disk), interleaved; target s3 >= 0.7x fs. In each run also the
#      ceilings: the same file straight to the same SeaweedFS with boto3 (the AWS SDK for
#      Python, benches/tus-s3/direct_s3.py), as a multipart upload with xferd's part size
#      and parts in flight and as one PutObject, and the raw disk (dd, fsync, into the
#      directory SeaweedFS writes to). xferd s3 / direct S3 is how much of the gap is ours;
#      direct S3 / xferd fs is the best ratio any S3 client could reach here.
#   2. Ranged GET (the middle half of the file) over h1/h2/h3: xferd s3 vs xferd fs.
#   3. tus uploads of SIZE_MB in PATCHes of CHUNK_MB with tuspy and tus-js-client (the tus
#      org's clients, interop/resumable/), plain HTTP/1.1 for both servers: xferd s3
#      (plain_listen) vs @tus/server + @tus/s3-store (benches/tus-s3/, same SeaweedFS, its own
#      bucket, the same part size); target xferd >= 2x.
#   3b. An HFS chunked upload of SIZE_MB (curl h1, chunks of the advised size, in order):
#      xferd s3 vs xferd fs, and the time of the last chunk, which completes the upload.
#   4. PAR_N parallel signed PUTs of PAR_MB (curl h1): all to one instance vs split over two
#      instances (cluster mode: s3 + the Redis), aggregate MB/s (informational: on one
#      machine both instances and SeaweedFS share the same cores).
#   5. Peak RSS (VmHWM) of a fresh xferd s3 instance after one BIG_MB PUT per protocol in
#      BIG_PROTOS; target < 96 MiB.
# Also: S3 requests per upload / append / ranged GET (xferd_s3_requests_total{op} from
# /metrics), Redis commands per request in cluster mode (INFO commandstats), peak RSS of
# every server process. Every stored object is checked (SHA-256 of a download, or cmp on
# fs) outside the timing, then deleted. MB/s with 1 MB = 10^6 bytes; medians of RUNS.
#
# Env: SIZE_MB (256), RUNS (3), CHUNK_MB (64), PAR_N (4), PAR_MB (64), BIG_MB (1024),
#      PROTOCOLS ("h1 h2 h3"), BIG_PROTOS ("h1 h2 h3"), CLIENTS ("tuspy tus-js-client"),
#      PHASES ("put get tus hfs par rss"), S3_PART_MB (8), S3_IN_FLIGHT (4), PEER_MAX_PARTS
#      (@tus/s3-store maxConcurrentPartUploads; unset = its default, 60), PYTHON, NODE,
#      KEEP_WORK=1, TMPDIR, XFERD_COMMIT (the binary's commit, for the report), WEED_TUNING (flags added to `weed mini`, see below; "" = none).
#      Smoke run (< 3 min): SIZE_MB=32 RUNS=1 PAR_N=2 PAR_MB=16 BIG_MB=64 benches/s3.sh
# Needs benches/install-s3-peers.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
. "$REPO/interop/lib.sh"           # free_port, stop_pid, measure_transfer
. "$REPO/interop/cluster/lib.sh"   # weed_start, redis_start, xferd_config, s3_ops, ...

H3="$REPO/interop/http/h3_client.py"
TUSPY="$REPO/interop/resumable/tus_py.py"
TUSJS="$REPO/interop/resumable/node/tus_js.mjs"
PEER="$HERE/tus-s3/tus_s3_server.mjs"
PY=${PYTHON:-python3}
NODE=${NODE:-node}
SIZE_MB=${SIZE_MB:-256}
RUNS=${RUNS:-3}
CHUNK_MB=${CHUNK_MB:-64}
PAR_N=${PAR_N:-4}
PAR_MB=${PAR_MB:-64}
BIG_MB=${BIG_MB:-1024}
PROTOCOLS=${PROTOCOLS:-h1 h2 h3}
BIG_PROTOS=${BIG_PROTOS:-h1 h2 h3}
CLIENTS=${CLIENTS:-tuspy tus-js-client}
PHASES=${PHASES:-put get tus hfs par rss}
export S3_PART_MB=${S3_PART_MB:-8} S3_IN_FLIGHT=${S3_IN_FLIGHT:-4}
SECRET="bench-secret-$RANDOM$RANDOM$RANDOM"
TMO=900   # one transfer, seconds

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "no xferd binary at '$XFERD' (build it: cargo build --release)" >&2; exit 64; }
XFERD=$(readlink -f "$XFERD")
for tool in weed redis-server redis-cli curl openssl timeout cmp sha256sum dd "$PY" "$NODE"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-s3-peers.sh" >&2; exit 69; }
done
"$PY" -c 'import tusclient, pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' 2>/dev/null \
    || { echo "tuspy or pycurl with HTTP/3 missing: run benches/install-s3-peers.sh" >&2; exit 69; }
DIRECT="$HERE/tus-s3/direct_s3.py"
"$PY" -c 'import boto3' 2>/dev/null || { echo "boto3 missing: run benches/install-s3-peers.sh" >&2; exit 69; }
[ -d "$REPO/interop/resumable/node/node_modules/tus-js-client" ] && [ -d "$HERE/tus-s3/node_modules/@tus/s3-store" ] \
    || { echo "tus-js-client or @tus/s3-store missing: run benches/install-s3-peers.sh" >&2; exit 69; }
has() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-s3bench.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "# $*" >&2; }

# Disk: sources + SeaweedFS (objects are deleted after each check; its volumes reclaim
# lazily, so count everything written) + the fs instance's copy.
MAXMB=$(printf '%s\n' "$SIZE_MB" "$BIG_MB" "$PAR_MB" | sort -n | tail -n1)
nproto=$(echo "$PROTOCOLS" | wc -w)
nbig=$(echo "$BIG_PROTOS" | wc -w)
nclient=$(echo "$CLIENTS" | wc -w)
need_mb=$(( SIZE_MB * (RUNS * nproto * 2 + RUNS * 3 + 6 + RUNS * nclient * 2) + BIG_MB * (nbig + 1) + PAR_MB * (PAR_N * RUNS * 2 + 2) + 512 ))
avail_mb=$(df -Pm "$WORK" | awk 'NR==2 {print $4}')
if [ "$avail_mb" -lt "$need_mb" ]; then
    echo "not enough disk in $WORK: need about $need_mb MB, have $avail_mb MB (lower SIZE_MB/RUNS/BIG_MB)" >&2
    exit 1
fi

# ------------------------------------------------------------------ services
# SeaweedFS tuning, the same for every row (xferd, the direct boto3 rows and the peer):
# weed_start (interop/cluster/lib.sh) runs `weed mini ... &`; this wrapper puts
# WEED_TUNING in front of its flags (exec: the PID weed_start keeps is weed's own).
# Default: none. Measured 2026-12-02 with benches/tus-s3/direct_s3.py (boto3, 256 MiB,
# multipart 8 MiB x 4 and one PutObject, fresh weed each, 2 cores shared with other
# builds at load 13-17), MB/s multipart / PutObject: no flag left the run-to-run spread
# of the defaults (three starts: 21-43 / 22-46): -filer.maxMB=8 (chunks = parts; default
# 4) 25-34 / 29, =16 22-39 / 22-28, =64 21-25 / 18, -master.volumePreallocate 23-46 /
# 39-44, that with -filer.maxMB=8 -volume.fileSizeLimitMB=1024 41-49 / 52 (one start).
# What bounds SeaweedFS here is CPU: weed mini spends
# about 11 ms of CPU per MB stored whoever uploads (xferd 3.2 ms/MB; the report's "CPU
# time" lines), so on 2 shared cores it cannot pass ~90 MB/s with one core to itself.
# (-volume.index=memory is the default; -master.volumeSizeLimitMB is auto-set to 1024.)
WEED_TUNING=${WEED_TUNING-}
weed() {
    if [ "${1:-}" = mini ]; then
        shift
        # shellcheck disable=SC2086 # one flag per word
        exec "$(command -v weed)" mini $WEED_TUNING "$@"
    fi
    command weed "$@"
}
# A port weed_port found free can be taken before weed binds it (busy loopback on a shared
# machine: weed exits at once with "Port allocation failed"): try three times.
for try in 1 2 3; do
    weed_start "$WORK/weed" xs3 tuspeer xcluster && break
    [ "$try" = 3 ] && exit 1
    stop_pid "$WEED_PID"
    rm -rf "$WORK/weed"
    log "SeaweedFS start $try failed, trying again"
done
PIDS+=("$WEED_PID")
redis_start "$WORK/redis" || exit 1
PIDS+=("$REDIS_PID")
shared_cert "$WORK/pki"
export NODE_EXTRA_CA_CERTS="$WORK/pki/cert.pem" REQUESTS_CA_BUNDLE="$WORK/pki/cert.pem"
vm_hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time (user + system, clock ticks) a process has used: CPU per MB does not depend on
# how busy the (shared) machine is, MB/s does.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK=$(getconf CLK_TCK)
# cpu_ms_per_mb T0 T1: the ticks between T0 and T1 as CPU milliseconds per MB of SIZE.
cpu_ms_per_mb() { awk -v a="$1" -v b="$2" -v t="$TICK" -v s="$SIZE" 'BEGIN { printf "%.2f", (b - a) * 1000 / t / (s / 1e6) }'; }

# start_instance NAME BACKEND BUCKET REDIS_PORT: sets <NAME>_PID, _PORT, _PLAIN, _CONF.
start_instance() {
    local name=$1 backend=$2 bucket=$3 redis=${4:-} port plain
    port=$(free_port)
    plain=$(free_port)
    xferd_config "$WORK/$name.toml" "$port" "$plain" "$WORK/$name" "$SECRET" $((MAXMB * 2)) "$backend" "$bucket" "$WORK/pki" "$redis"
    xferd_start "$XFERD" "$WORK/$name.toml" "$WORK/$name.log" "https://127.0.0.1:$port/health" || exit 1
    PIDS+=("$XFERD_PID")
    printf -v "${name}_PID" %s "$XFERD_PID"
    printf -v "${name}_PORT" %s "$port"
    printf -v "${name}_PLAIN" %s "$plain"
    printf -v "${name}_CONF" %s "$WORK/$name.toml"
}
# sign NAME METHOD PATH [BASE]: a signed URL at instance NAME (default its TLS port).
sign() {
    local conf="$WORK/$1.toml" base=${4:-}
    if [ -n "$base" ]; then
        timeout 10 "$XFERD" sign --config "$conf" --scheme v3 --method "$2" --path "$3" --expires 2h --base-url "$base"
    else
        timeout 10 "$XFERD" sign --config "$conf" --scheme v3 --method "$2" --path "$3" --expires 2h
    fi
}
metrics() { eval "echo https://127.0.0.1:\$${1}_PORT/metrics"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# stored_ok NAME BACKEND PATH SRC: the object at PATH is SRC (fs: cmp; s3: SHA-256 of a GET).
stored_ok() {
    if [ "$2" = fs ]; then
        cmp -s "$4" "$WORK/$1/data/$3"
    else
        [ "$(curl -sk --max-time "$TMO" "$(sign "$1" GET "$3")" | sha256sum | cut -d' ' -f1)" = "$(sha "$4")" ]
    fi
}
# remove NAME BACKEND BUCKET PATH: deletes the stored object (fs file or S3 object).
remove() {
    if [ "$2" = fs ]; then rm -f "$WORK/$1/data/$4"; else s3curl --max-time 60 -X DELETE -o /dev/null "$WEED_ENDPOINT/$3/$4" || true; fi
}

RES="$WORK/results"   # lines: key<TAB>value
: >"$RES"
put() { printf '%s\t%s\n' "$1" "$2" >>"$RES"; }

mkdir -p "$WORK/src" "$WORK/out"
SIZE=$((SIZE_MB * 1024 * 1024))
SRC="$WORK/src/file.bin"
log "creating a $SIZE_MB MiB random file"
head -c "$SIZE" /dev/urandom >"$SRC"

# ------------------------------------------------------------------ 1, 2: fs vs s3
if has put || has get; then
    start_instance FS fs ""
    start_instance S3 s3 xs3
fi
N=0
if has put; then
    for run in $(seq 1 "$RUNS"); do
        for proto in $PROTOCOLS; do
            for b in fs s3; do
                N=$((N + 1))
                inst=$(echo "$b" | tr a-z A-Z)
                p="bench/put-$proto-$run-$N.bin"
                before=$(s3_ops "$(metrics "$inst")")
                url=$(sign "$inst" PUT "$p")
                eval "xpid=\$${inst}_PID"
                c0=$(cpu_ticks "$xpid") w0=$(cpu_ticks "$WEED_PID")
                read -r status secs bytes < <(measure_transfer "$proto" up "$url" "$SRC" \
                    "$WORK/out/$N.err" "$WORK/out/$N.body" "$TMO")
                c1=$(cpu_ticks "$xpid") w1=$(cpu_ticks "$WEED_PID")
                after=$(s3_ops "$(metrics "$inst")")
                if [ "$status" = 201 ] && stored_ok "$inst" "$b" "$p" "$SRC"; then
                    mbps=$(awk -v s="$SIZE" -v t="$secs" 'BEGIN { printf "%.1f", s / 1e6 / t }')
                    put "put $proto $b" "$mbps"
                    put "cpu xferd put $proto $b" "$(cpu_ms_per_mb "$c0" "$c1")"
                    [ "$b" = fs ] || put "cpu weed put $proto s3" "$(cpu_ms_per_mb "$w0" "$w1")"
                    [ "$b" = fs ] || put "ops put" "$(ops_diff "$before" "$after")"
                    log "PUT $proto $b run $run: $mbps MB/s"
                else
                    put "put $proto $b" FAIL
                    log "PUT $proto $b run $run FAILED: status $status $(head -c 300 "$WORK/out/$N.err" 2>/dev/null) $(head -c 300 "$WORK/out/$N.body" 2>/dev/null)"
                fi
                remove "$inst" "$b" xs3 "$p"
            done
        done
        # The ceilings: boto3 straight to SeaweedFS (multipart as xferd, one PutObject),
        # then the disk SeaweedFS writes to.
        for mode in multipart put; do
            N=$((N + 1))
            p="bench/direct-$mode-$run-$N.bin"
            w0=$(cpu_ticks "$WEED_PID")
            if S3_KEY="$S3_KEY" S3_SECRET="$S3_SECRET" timeout "$TMO" "$PY" "$DIRECT" "$WEED_ENDPOINT" xs3 "$p" "$SRC" \
                   --mode "$mode" --part-mb "$S3_PART_MB" --in-flight "$S3_IN_FLIGHT" >"$WORK/out/$N.json" 2>"$WORK/out/$N.err" \
               && w1=$(cpu_ticks "$WEED_PID") \
               && [ "$(s3curl --max-time "$TMO" "$WEED_ENDPOINT/xs3/$p" | sha256sum | cut -d' ' -f1)" = "$(sha "$SRC")" ]; then
                mbps=$("$PY" -c 'import json,sys; d = json.load(open(sys.argv[1])); print("%.1f" % (d["bytes"] / 1e6 / d["seconds"]))' "$WORK/out/$N.json")
                put "direct $mode" "$mbps"
                put "cpu weed direct $mode" "$(cpu_ms_per_mb "$w0" "$w1")"
                log "direct S3 (boto3) $mode run $run: $mbps MB/s"
            else
                put "direct $mode" FAIL
                log "direct S3 (boto3) $mode run $run FAILED: $(head -c 300 "$WORK/out/$N.json") $(tail -n 3 "$WORK/out/$N.err")"
            fi
            s3curl --max-time 60 -X DELETE -o /dev/null "$WEED_ENDPOINT/xs3/$p" || true
        done
        t0=$(date +%s.%N)
        dd if="$SRC" of="$WORK/weed/data/dd.bin" bs=8M conv=fsync status=none
        t1=$(date +%s.%N)
        rm -f "$WORK/weed/data/dd.bin"
        put "disk dd" "$(awk -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", s / 1e6 / (b - a) }')"
        weed_vacuum
    done
fi
if has get; then
    GA=$((SIZE / 4))
    GB=$((SIZE * 3 / 4 - 1))
    for b in fs s3; do
        inst=$(echo "$b" | tr a-z A-Z)
        code=$(curl -sk --http1.1 -H 'Expect:' -T "$SRC" -o /dev/null -w '%{http_code}' "$(sign "$inst" PUT bench/get.bin)" || true)
        if [ "$code" != 201 ] || ! stored_ok "$inst" "$b" bench/get.bin "$SRC"; then
            log "could not store the GET source on $b (status $code)"
            exit 1
        fi
    done
    for run in $(seq 1 "$RUNS"); do
        for proto in $PROTOCOLS; do
            for b in fs s3; do
                N=$((N + 1))
                inst=$(echo "$b" | tr a-z A-Z)
                url=$(sign "$inst" GET bench/get.bin)
                before=$(s3_ops "$(metrics "$inst")")
                if [ "$proto" = h3 ]; then
                    timeout $((TMO + 30)) "$PY" "$H3" --timeout "$TMO" get "$url" --range "$GA-$GB" >"$WORK/out/$N.json" 2>"$WORK/out/$N.err" || true
                    read -r status secs bytes < <("$PY" -c 'import json,sys
try: d = json.load(open(sys.argv[1]))
except Exception: d = {}
print(d.get("status", 0) if d.get("http_version") == "3" else "h3err", d.get("seconds", 0), d.get("bytes", 0))' "$WORK/out/$N.json")
                else
                    flag=--http1.1; [ "$proto" = h2 ] && flag=--http2
                    read -r status secs bytes _v < <(curl -sS -k "$flag" --max-time "$TMO" -r "$GA-$GB" -o /dev/null \
                        -w '%{http_code} %{time_total} %{size_download} %{http_version}\n' "$url" 2>"$WORK/out/$N.err" || echo "0 0 0 0")
                fi
                after=$(s3_ops "$(metrics "$inst")")
                if [ "$status" = 206 ] && [ "$bytes" = $((GB - GA + 1)) ]; then
                    mbps=$(awk -v s="$bytes" -v t="$secs" 'BEGIN { printf "%.1f", s / 1e6 / t }')
                    put "get $proto $b" "$mbps"
                    [ "$b" = fs ] || put "ops get" "$(ops_diff "$before" "$after")"
                    log "ranged GET $proto $b run $run: $mbps MB/s"
                else
                    put "get $proto $b" FAIL
                    log "ranged GET $proto $b run $run FAILED: status $status, $bytes bytes $(head -c 300 "$WORK/out/$N.err")"
                fi
            done
        done
    done
    remove FS fs xs3 bench/get.bin
    remove S3 s3 xs3 bench/get.bin
fi
if has put || has get; then
    put "hwm xferd fs (PUT + GET phases)" "$(vm_hwm "$FS_PID")"
    put "hwm xferd s3 (PUT + GET phases)" "$(vm_hwm "$S3_PID")"
    stop_pid "$FS_PID"
    stop_pid "$S3_PID"
fi

weed_vacuum
# ------------------------------------------------------------------ 3: tus, xferd s3 vs @tus/s3-store
if has tus; then
    start_instance TS s3 xs3
    TPORT=$(free_port)
    (cd "$HERE/tus-s3" && exec env S3_KEY="$S3_KEY" S3_SECRET="$S3_SECRET" PART_SIZE=$((S3_PART_MB * 1024 * 1024)) \
        ${PEER_MAX_PARTS:+MAX_PARTS=$PEER_MAX_PARTS} "$NODE" "$PEER" "$TPORT" "$WEED_ENDPOINT" tuspeer) >"$WORK/peer.log" 2>&1 &
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    for _ in $(seq 1 150); do
        [ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TPORT/health" || true)" = 200 ] && break
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$PEER_PID" 2>/dev/null || { log "@tus/server did not start: $(tail -n 20 "$WORK/peer.log")"; exit 1; }
    CHUNK=$((CHUNK_MB * 1024 * 1024))
    for run in $(seq 1 "$RUNS"); do
        for client in $CLIENTS; do
            for srv in xferd peer; do
                N=$((N + 1))
                p="bench/tus-$client-$run-$N.bin"
                if [ "$srv" = xferd ]; then endpoint=$(sign TS PUT "$p" "http://127.0.0.1:$TS_PLAIN/")
                else endpoint="http://127.0.0.1:$TPORT/files/"; fi
                out="$WORK/out/$N.json"
                before=$(s3_ops "$(metrics TS)")
                rc=0
                case $client in
                    tuspy) timeout "$TMO" "$PY" "$TUSPY" upload "$endpoint" "$SRC" --chunk-size "$CHUNK" \
                               --metadata filename=file.bin >"$out" 2>"$out.err" || rc=$? ;;
                    tus-js-client) timeout "$TMO" "$NODE" "$TUSJS" upload "$endpoint" "$SRC" --chunk-size "$CHUNK" \
                               >"$out" 2>"$out.err" || rc=$? ;;
                esac
                after=$(s3_ops "$(metrics TS)")
                read -r secs url < <("$PY" -c 'import json,sys
try: d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
except Exception: d = {}
print(d.get("seconds") or "-", d.get("url") or "-")' "$out")
                ok=0
                if [ "$rc" = 0 ] && [ "$secs" != - ]; then
                    if [ "$srv" = xferd ]; then
                        stored_ok TS s3 "$p" "$SRC" && ok=1
                    else
                        [ "$(s3curl --max-time "$TMO" "$WEED_ENDPOINT/tuspeer/${url##*/}" | sha256sum | cut -d' ' -f1)" = "$(sha "$SRC")" ] && ok=1
                    fi
                fi
                if [ "$ok" = 1 ]; then
                    mbps=$(awk -v s="$SIZE" -v t="$secs" 'BEGIN { printf "%.1f", s / 1e6 / t }')
                    put "tus $client $srv" "$mbps"
                    [ "$srv" = peer ] || put "ops tus" "$(ops_diff "$before" "$after")"
                    log "tus $client -> $srv run $run: $mbps MB/s"
                else
                    put "tus $client $srv" FAIL
                    log "tus $client -> $srv run $run FAILED (exit $rc): $(head -c 400 "$out") $(tail -n 3 "$out.err")"
                fi
                if [ "$srv" = xferd ]; then remove TS s3 xs3 "$p"
                else s3curl --max-time 60 -X DELETE -o /dev/null "$WEED_ENDPOINT/tuspeer/${url##*/}" || true
                     s3curl --max-time 60 -X DELETE -o /dev/null "$WEED_ENDPOINT/tuspeer/${url##*/}.info" || true; fi
            done
        done
    done
    put "hwm xferd s3 (tus phase)" "$(vm_hwm "$TS_PID")"
    put "hwm @tus/server + @tus/s3-store (tus phase)" "$(vm_hwm "$PEER_PID")"
    stop_pid "$TS_PID"
    stop_pid "$PEER_PID"
fi

weed_vacuum
# ------------------------------------------------------------------ 3b: HFS chunked, s3 vs fs
# The HFS chunked API (POST /chunked-upload, then PUT each chunk of the advised size, curl h1,
# one after the other): xferd s3 vs xferd fs, and how long the last chunk takes (it completes
# the upload: the SHA-256 read back and, on s3, the object made of the chunk objects).
if has hfs; then
    start_instance HS s3 xs3
    start_instance HF fs xfs
    for run in $(seq 1 "$RUNS"); do
        for inst in HS HF; do
            N=$((N + 1))
            p="bench/hfs-$run-$N.bin"
            backend=s3; bucket=xs3
            [ "$inst" = HF ] && { backend=fs; bucket=xfs; }
            port=$(eval "echo \$${inst}_PORT")
            url=$(sign "$inst" POST "$p")
            created=$(curl -sk --max-time 60 -X POST -H "X-Filename: $p" -H "X-Total-Size: $SIZE" \
                "https://127.0.0.1:$port/chunked-upload?${url#*\?}" || true)
            read -r id chunk total < <("$PY" -c 'import json,sys
try: d = json.loads(sys.argv[1]); print(d["session_id"], d["chunk_size"], d["total_chunks"])
except Exception: print("- - -")' "$created")
            if [ "$id" = - ]; then put "hfs $backend" FAIL; log "HFS create on $inst failed: $created"; continue; fi
            [ "$backend" = fs ] || before=$(s3_ops "$(metrics "$inst")")
            ok=1
            t0=$(date +%s.%N)
            for n in $(seq 0 $((total - 1))); do
                tl=$(date +%s.%N)
                code=$(tail -c +$((n * chunk + 1)) "$SRC" | head -c "$chunk" | curl -sk --http1.1 -H 'Expect:' \
                    --max-time "$TMO" -X PUT -H "X-Upload-Session-ID: $id" -H "X-Chunk-Number: $n" \
                    --data-binary @- -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/chunked-upload" || true)
                [ "$code" = 200 ] || { ok=0; log "HFS chunk $n on $inst: $code"; break; }
            done
            t1=$(date +%s.%N)
            [ "$ok" = 1 ] && ! stored_ok "$inst" "$backend" "$p" "$SRC" && ok=0
            if [ "$ok" = 1 ]; then
                put "hfs $backend" "$(awk -v s="$SIZE" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", s / 1e6 / (b - a) }')"
                last=$(awk -v a="$tl" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
                put "hfs last $backend" "$last"
                [ "$backend" = fs ] || put "ops hfs" "$(ops_diff "$before" "$(s3_ops "$(metrics "$inst")")")"
                log "HFS $total chunks of $chunk on $inst ($backend) run $run: last chunk $last s"
            else
                put "hfs $backend" FAIL
            fi
            remove "$inst" "$backend" "$bucket" "$p"
        done
    done
    stop_pid "$HS_PID"
    stop_pid "$HF_PID"
fi

weed_vacuum
# ------------------------------------------------------------------ 4: one vs two instances
if has par; then
    start_instance A s3 xcluster "$REDIS_PORT"
    start_instance B s3 xcluster "$REDIS_PORT"
    PSRC="$WORK/src/par.bin"
    head -c $((PAR_MB * 1024 * 1024)) "$SRC" >"$PSRC" 2>/dev/null || true
    [ "$(stat -c %s "$PSRC")" = $((PAR_MB * 1024 * 1024)) ] || head -c $((PAR_MB * 1024 * 1024)) /dev/urandom >"$PSRC"
    r0=$(redis_calls)
    for run in $(seq 1 "$RUNS"); do
        for mode in one two; do
            N=$((N + 1))
            urls=()
            for i in $(seq 1 "$PAR_N"); do
                inst=A
                [ "$mode" = two ] && [ $((i % 2)) = 0 ] && inst=B
                urls+=("$(sign "$inst" PUT "bench/par-$mode-$run-$i.bin")")
            done
            t0=$(date +%s.%N)
            cpids=()
            for i in $(seq 1 "$PAR_N"); do
                curl -sk --http1.1 -H 'Expect:' --max-time "$TMO" -T "$PSRC" -o /dev/null -w '%{http_code}' "${urls[$((i - 1))]}" \
                    >"$WORK/out/$N.$i.code" 2>"$WORK/out/$N.$i.err" &
                cpids+=($!)
            done
            for c in "${cpids[@]}"; do wait "$c" || true; done
            t1=$(date +%s.%N)
            good=1
            for i in $(seq 1 "$PAR_N"); do [ "$(cat "$WORK/out/$N.$i.code")" = 201 ] || good=0; done
            # Check one object of the batch whole (all were hashed by xferd on the way in).
            [ "$good" = 1 ] && ! stored_ok A s3 "bench/par-$mode-$run-1.bin" "$PSRC" && good=0
            if [ "$good" = 1 ]; then
                mbps=$(awk -v s=$((PAR_MB * 1024 * 1024 * PAR_N)) -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", s / 1e6 / (b - a) }')
                put "par $mode" "$mbps"
                log "$PAR_N parallel PUTs of $PAR_MB MiB, $mode instance(s), run $run: $mbps MB/s aggregate"
            else
                put "par $mode" FAIL
                log "$PAR_N parallel PUTs, $mode, run $run FAILED: codes $(cat "$WORK/out/$N".*.code | tr '\n' ' ')"
            fi
            for i in $(seq 1 "$PAR_N"); do remove A s3 xcluster "bench/par-$mode-$run-$i.bin"; done
        done
    done
    put "redis plain PUT" "$(ops_diff "$r0" "$(redis_calls)" $((RUNS * PAR_N * 2)))"
    # Redis and S3 per tus upload in cluster mode (tuspy on A): the PAR_MB file in one PATCH,
    # then in 8 PATCHes (the difference / 7 is the cost of one more append).
    for patches in 1 8; do
        r0=$(redis_calls)
        s0="$(s3_ops "$(metrics A)") $(s3_ops "$(metrics B)")"
        timeout "$TMO" "$PY" "$TUSPY" upload "$(sign A PUT "bench/par-tus-$patches.bin")" "$PSRC" \
            --chunk-size $((PAR_MB * 1024 * 1024 / patches)) --metadata filename=par.bin >"$WORK/out/par-tus.json" 2>&1 \
            || log "cluster tus upload failed: $(head -c 300 "$WORK/out/par-tus.json")"
        put "redis tus $patches" "$(ops_diff "$r0" "$(redis_calls)")"
        put "ops cluster tus $patches" "$(ops_diff "$s0" "$(s3_ops "$(metrics A)") $(s3_ops "$(metrics B)")")"
        [ "$patches" = 8 ] || remove A s3 xcluster "bench/par-tus-$patches.bin"
    done
    r0=$(redis_calls)
    curl -sk -r 0-999 -o /dev/null "$(sign B GET bench/par-tus-8.bin)" || true
    put "redis ranged GET" "$(ops_diff "$r0" "$(redis_calls)")"
    remove A s3 xcluster bench/par-tus-8.bin
    put "hwm xferd A (parallel phase)" "$(vm_hwm "$A_PID")"
    put "hwm xferd B (parallel phase)" "$(vm_hwm "$B_PID")"
    stop_pid "$A_PID"
    stop_pid "$B_PID"
fi

weed_vacuum
# ------------------------------------------------------------------ 5: peak RSS, BIG_MB s3 PUT
if has rss; then
    BSRC="$WORK/src/big.bin"
    log "creating a $BIG_MB MiB random file"
    head -c $((BIG_MB * 1024 * 1024)) /dev/urandom >"$BSRC"
    for proto in $BIG_PROTOS; do
        start_instance R s3 xs3
        N=$((N + 1))
        read -r status secs _b < <(measure_transfer "$proto" up "$(sign R PUT "bench/big-$proto.bin")" "$BSRC" \
            "$WORK/out/$N.err" "$WORK/out/$N.body" "$TMO")
        hwm=$(vm_hwm "$R_PID")
        if [ "$status" = 201 ] && stored_ok R s3 "bench/big-$proto.bin" "$BSRC"; then
            put "rss $proto" "$hwm"
            put "bigput $proto" "$(awk -v s=$((BIG_MB * 1024 * 1024)) -v t="$secs" 'BEGIN { printf "%.1f", s / 1e6 / t }')"
            log "$BIG_MB MiB s3 PUT $proto: VmHWM $((hwm / 1024)) MiB"
        else
            put "rss $proto" FAIL
            log "$BIG_MB MiB s3 PUT $proto FAILED: status $status $(head -c 300 "$WORK/out/$N.err")"
        fi
        remove R s3 xs3 "bench/big-$proto.bin"
        weed_vacuum
        stop_pid "$R_PID"
        rm -rf "$WORK/R"
    done
    rm -f "$BSRC"
fi

weed_vacuum
# ------------------------------------------------------------------ report
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit+dirty"
# XFERD_COMMIT: the commit the binary was built from, when it is not this checkout's.
commit=${XFERD_COMMIT:-$commit}
ver() { "$NODE" -e 'console.log(require(process.argv[1] + "/package.json").version)' "$1" 2>/dev/null || echo "?"; }
echo
echo "S3 backend benchmark: SeaweedFS $(weed version 2>/dev/null | head -n1 | awk '{print $3}') (weed mini, loopback, one volume server),"
echo "  SeaweedFS flags added (WEED_TUNING): ${WEED_TUNING:-none}; direct S3 = boto3 $("$PY" -c 'import boto3; print(boto3.__version__)') (benches/tus-s3/direct_s3.py)"
echo "  xferd parts of $S3_PART_MB MiB x $S3_IN_FLIGHT in flight; files: $SIZE_MB MiB (PUT, GET, tus), $PAR_MB MiB x $PAR_N (parallel), $BIG_MB MiB (RSS)"
echo "  runs: $RUNS interleaved, medians; MB/s with 1 MB = 10^6 bytes; ranged GET = the middle half of the file"
echo "  SeaweedFS data dir at the end (objects deleted, volumes vacuumed): $(du -sm "$WORK/weed/data" | cut -f1) MB"
echo "machine: nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "xferd: commit $commit, $XFERD; clients: curl $(curl --version | head -n1 | awk '{print $2}') (h1, h2), pycurl $("$PY" -c 'import pycurl; print(pycurl.version_info()[1])') (h3),"
echo "  tuspy $("$PY" -c 'import importlib.metadata as m; print(m.version("tuspy"))'), tus-js-client $(ver "$REPO/interop/resumable/node/node_modules/tus-js-client") (PATCHes of $CHUNK_MB MiB);"
echo "  peer: @tus/server $(ver "$HERE/tus-s3/node_modules/@tus/server") + @tus/s3-store $(ver "$HERE/tus-s3/node_modules/@tus/s3-store") (partSize $S3_PART_MB MiB, maxConcurrentPartUploads ${PEER_MAX_PARTS:-60 (default)}), node $("$NODE" --version)"
echo
"$PY" - "$RES" "$PAR_N" <<'PYEOF'
import statistics, sys
res, par_n = {}, sys.argv[2]
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("\t")
    res.setdefault(k, []).append(v)
def med(k):
    vals = [float(v) for v in res.get(k, []) if v != "FAIL"]
    return statistics.median(vals) if vals else None
def runs(k):
    return " ".join(res.get(k, [])) or "-"
f = lambda v, p="%.1f": "-" if v is None else p % v
rows = []
def row(work, x, p, target=None, note=""):
    xv, pv = med(x), (med(p) if p else None)
    ratio = xv / pv if xv and pv else None
    if target is None:
        t = "-"
    else:
        t = ">= %.1fx %s" % (target, "-" if ratio is None else ("met" if ratio >= target else "MISSED"))
    rows.append([work, f(xv), f(pv), f(ratio, "%.2fx"), t, "%s | %s" % (runs(x), runs(p) if p else "")])
for proto in ("h1", "h2", "h3"):
    if ("put %s s3" % proto) in res:
        row("PUT %s: xferd s3 / xferd fs" % proto, "put %s s3" % proto, "put %s fs" % proto, 0.7)
if "direct multipart" in res:
    for proto in ("h1", "h2", "h3"):
        if ("put %s s3" % proto) in res:
            row("PUT %s: xferd s3 / direct S3 multipart" % proto, "put %s s3" % proto, "direct multipart")
    row("ceiling: direct S3 multipart / xferd fs h1", "direct multipart", "put h1 fs", 0.7)
    row("ceiling: direct S3 PutObject / xferd fs h1", "direct put", "put h1 fs", 0.7)
    row("disk (dd, fsync) / xferd fs h1", "disk dd", "put h1 fs")
for proto in ("h1", "h2", "h3"):
    if ("get %s s3" % proto) in res:
        row("ranged GET %s: s3 / fs" % proto, "get %s s3" % proto, "get %s fs" % proto)
for client in ("tuspy", "tus-js-client"):
    if ("tus %s xferd" % client) in res:
        row("tus %s: xferd s3 / @tus/s3-store" % client, "tus %s xferd" % client, "tus %s peer" % client, 2.0)
        if "direct multipart" in res:
            row("tus %s: xferd s3 / direct S3 multipart" % client, "tus %s xferd" % client, "direct multipart")
if "hfs s3" in res:
    row("HFS chunked h1: xferd s3 / xferd fs", "hfs s3", "hfs fs")
if "par two" in res:
    row("%s parallel PUTs h1: 2 instances / 1" % par_n, "par two", "par one")
w = [max(len(str(r[i])) for r in rows + [["work", "xferd", "peer", "ratio", "target", ""]]) for i in range(5)]
hdr = ["work", "xferd MB/s", "peer MB/s", "ratio", "target"]
w = [max(w[i], len(hdr[i])) for i in range(5)]
print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr)) + "  runs (xferd | peer)")
for r in rows:
    print("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r[:5])) + "  " + r[5])
if "hfs last s3" in res:
    print("HFS chunked: the last chunk's request (it completes the upload), seconds: s3 %s (runs %s), fs %s (runs %s)"
          % (f(med("hfs last s3"), "%.3f"), runs("hfs last s3"), f(med("hfs last fs"), "%.3f"), runs("hfs last fs")))
for proto in ("h1", "h2", "h3"):
    k = "rss %s" % proto
    if k in res:
        v = [int(x) for x in res[k] if x != "FAIL"]
        mib = max(v) / 1024 if v else None
        print("peak RSS (VmHWM) of a fresh xferd s3 during one big PUT over %s: %s MiB (target < 96 MiB: %s); %s MB/s"
              % (proto, f(mib), "-" if mib is None else ("met" if mib < 96 else "MISSED"), runs("bigput " + proto)))
print()
print("S3 requests (xferd_s3_requests_total by op, from /metrics):")
names = {"ops put": "per signed PUT", "ops get": "per ranged GET", "ops tus": "per tus upload (one instance)",
         "ops hfs": "per HFS chunked upload (one instance)",
         "ops cluster tus 1": "per tus upload, cluster mode, PAR_MB file in 1 PATCH",
         "ops cluster tus 8": "per tus upload, cluster mode, PAR_MB file in 8 PATCHes"}
for k, label in names.items():
    if k in res:
        vals = sorted(set(res[k]))
        print("  %-58s %s" % (label, vals[0] if len(vals) == 1 else " / ".join(vals)))
print("Redis commands (INFO commandstats, cluster mode; INFO itself left out):")
for k, label in (("redis plain PUT", "per signed PUT"), ("redis tus 1", "per tus upload in 1 PATCH (tuspy)"),
                 ("redis tus 8", "per tus upload in 8 PATCHes (tuspy)"), ("redis ranged GET", "per ranged GET")):
    if k in res:
        print("  %-58s %s" % (label, res[k][0]))
cpu = [k for k in sorted(res) if k.startswith("cpu ")]
if cpu:
    print("CPU time (user + system) per MB stored, ms (medians; independent of how busy the machine is):")
    for k in cpu:
        print("  %-58s %s" % (k[4:], f(med(k), "%.2f")))
print("Peak RSS (VmHWM) per server process:")
for k in sorted(res):
    if k.startswith("hwm "):
        print("  %-58s %.1f MiB" % (k[4:], int(res[k][0] or 0) / 1024))
PYEOF
