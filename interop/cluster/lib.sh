# Shell helpers for the scripts that run xferd on the s3 backend with a private SeaweedFS
# and Redis on loopback (interop/cluster/run.sh, benches/s3.sh). Source it after
# interop/lib.sh:
#   . "$REPO/interop/lib.sh"; . "$REPO/interop/cluster/lib.sh"
#
# Every service is started in the background with its data in a directory the caller owns
# (a fresh temp dir), and its PID is kept so that the caller's cleanup stops it by PID
# (stop_pid from interop/lib.sh). Start-ups are bounded (weed 60 s, redis 10 s).

S3_KEY=${S3_KEY:-xferdbenchkey}
S3_SECRET=${S3_SECRET:-xferd-bench-secret-key-0123456789}
S3_REGION=us-east-1

# A free loopback TCP port whose SeaweedFS gRPC twin (port + 10000) is free too.
weed_port() {
    "${PY:-python3}" - <<'PYEOF'
import socket, sys
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if 1024 < p < 55000 and free(p + 10000):
        print(p); sys.exit(0)
sys.exit(1)
PYEOF
}

# s3curl ARGS...: curl signing SigV4 with the bench identity (Debian curl >= 7.75).
s3curl() {
    curl -sS --connect-timeout 5 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_KEY:$S3_SECRET" "$@"
}

# weed_start DIR BUCKET...: `weed mini` on loopback with one identity and the given buckets
# (auto-creation off), data in DIR/data, log in DIR/weed.log. Sets WEED_PID and
# WEED_ENDPOINT (http://127.0.0.1:PORT) and WEED_MASTER (its master's HTTP URL); returns non-zero (log tail on stderr) when the
# first bucket does not answer a signed HEAD within 60 s.
weed_start() {
    local dir=$1 first=$2 ports=() p b
    shift
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<EOF
{"identities":[{"name":"xferd","credentials":[{"accessKey":"$S3_KEY","secretKey":"$S3_SECRET"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
    while [ "${#ports[@]}" -lt 5 ]; do
        p=$(weed_port)
        case " ${ports[*]} " in *" $p "*) continue ;; esac
        ports+=("$p")
    done
    weed mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="${ports[0]}" -filer.port="${ports[1]}" -master.port="${ports[2]}" \
        -volume.port="${ports[3]}" -admin.port="${ports[4]}" -s3.config="$dir/s3.json" \
        -bucket="$(IFS=,; echo "$*")" -s3.autoCreateBucket=false -webdav=false -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false >"$dir/weed.log" 2>&1 &
    WEED_PID=$!
    WEED_ENDPOINT="http://127.0.0.1:${ports[0]}"
    WEED_MASTER="http://127.0.0.1:${ports[2]}"
    for _ in $(seq 1 300); do
        kill -0 "$WEED_PID" 2>/dev/null || break
        if [ "$(s3curl --max-time 2 -I -o /dev/null -w '%{http_code}' "$WEED_ENDPOINT/$first" 2>/dev/null || true)" = 200 ]; then
            # -bucket with a comma list: every bucket must answer (create the missing ones).
            for b in "$@"; do
                [ "$(s3curl --max-time 2 -I -o /dev/null -w '%{http_code}' "$WEED_ENDPOINT/$b" 2>/dev/null || true)" = 200 ] \
                    || s3curl --max-time 10 -X PUT -o /dev/null "$WEED_ENDPOINT/$b" || true
            done
            return 0
        fi
        sleep 0.2
    done
    echo "SeaweedFS did not serve bucket '$first' within 60 s; log:" >&2
    tail -n 20 "$dir/weed.log" >&2
    return 1
}

# weed_vacuum: asks the master to compact volumes now (deleted objects free their disk;
# SeaweedFS would otherwise wait for its 15-minute garbage pass). Best effort, bounded.
weed_vacuum() {
    curl -s --max-time 120 -o /dev/null "$WEED_MASTER/vol/vacuum?garbageThreshold=0.0001" || true
}

# redis_start DIR: a private redis-server on a free loopback port, no persistence. Sets
# REDIS_PID and REDIS_PORT; non-zero when it does not answer PING within 10 s.
redis_start() {
    local dir=$1
    mkdir -p "$dir"
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$dir" \
        >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" = PONG ] && return 0
        sleep 0.1
    done
    echo "redis-server did not answer PING within 10 s; log:" >&2
    tail -n 20 "$dir/redis.log" >&2
    return 1
}

# redis_calls: "cmd=calls ..." per command from INFO commandstats (one line; the INFO calls
# themselves are left out).
redis_calls() {
    redis-cli -p "$REDIS_PORT" info commandstats 2>/dev/null | tr -d '\r' \
        | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1=\2/p' | sed '/^info=/d' | tr '\n' ' '
}

# shared_cert DIR: a self-signed certificate for 127.0.0.1 and localhost in DIR/cert.pem +
# DIR/key.pem (a cluster needs one certificate from the configuration for all instances).
shared_cert() {
    local dir=$1
    mkdir -p "$dir"
    cat >"$dir/req.cnf" <<EOF
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = xferd-cluster
[ext]
subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
EOF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -config "$dir/req.cnf" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>"$dir/openssl.log"
}

# xferd_config FILE PORT PLAIN_PORT STATE_DIR SECRET MAX_MB BACKEND BUCKET [CERT_DIR [REDIS]]:
# writes an instance's config. BACKEND "fs" stores under STATE_DIR/data; "s3" uses the
# bucket BUCKET of $WEED_ENDPOINT (parts of $S3_PART_MB MiB, default 8, $S3_IN_FLIGHT in
# flight, default 4). With CERT_DIR the instance uses DIR/cert.pem + key.pem; with REDIS
# (a port) it joins the cluster of that Redis. PLAIN_PORT "" = no plain listener.
xferd_config() {
    local file=$1 port=$2 plain=$3 state=$4 secret=$5 max_mb=$6 backend=$7 bucket=$8 certs=${9:-} redis=${10:-}
    mkdir -p "$state/data" "$state/state"
    {
        echo "[server]"
        echo "listen = \"127.0.0.1:$port\""
        [ -z "$plain" ] || echo "plain_listen = \"127.0.0.1:$plain\""
        echo "storage_path = \"$state/data\""
        echo "state_path = \"$state/state\""
        echo "max_upload_size = \"$((max_mb + 1))MB\""
        echo "shutdown_grace = 2"
        echo
        echo "[security]"
        echo "secret = \"$secret\""
        if [ -n "$certs" ]; then
            echo
            echo "[tls]"
            echo "cert = \"$certs/cert.pem\""
            echo "key = \"$certs/key.pem\""
        fi
        if [ "$backend" = s3 ]; then
            echo
            echo "[storage]"
            echo "backend = \"s3\""
            echo
            echo "[storage.s3]"
            echo "endpoint = \"$WEED_ENDPOINT\""
            echo "region = \"$S3_REGION\""
            echo "bucket = \"$bucket\""
            echo "allow_http = true"
            echo "part_size = \"${S3_PART_MB:-8}MiB\""
            echo "max_parts_in_flight = ${S3_IN_FLIGHT:-4}"
            echo "access_key_id = \"$S3_KEY\""
            echo "secret_access_key = \"$S3_SECRET\""
        fi
        if [ -n "$redis" ]; then
            echo
            echo "[cluster]"
            echo "redis_url = \"redis://127.0.0.1:$redis/0\""
        fi
    } >"$file"
}

# xferd_start BINARY CONFIG LOG HEALTH_URL: starts `xferd serve`, waits (30 s) for
# HEALTH_URL to answer 200. Sets XFERD_PID; non-zero (log tail on stderr) otherwise.
xferd_start() {
    "$1" serve --config "$2" >"$3" 2>&1 &
    XFERD_PID=$!
    for _ in $(seq 1 150); do
        kill -0 "$XFERD_PID" 2>/dev/null || break
        [ "$(curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$4" || true)" = 200 ] && return 0
        sleep 0.2
    done
    echo "xferd ($2) did not answer $4; log:" >&2
    tail -n 20 "$3" >&2
    return 1
}

# s3_ops URL: "Op=count ..." of xferd_s3_requests_total at URL (the instance's /metrics).
s3_ops() {
    curl -sk --max-time 10 "$1" 2>/dev/null \
        | sed -n 's/^xferd_s3_requests_total{op="\([A-Za-z0-9]*\)"} \([0-9.e+]*\)$/\1=\2/p' | tr '\n' ' '
}

# ops_diff "BEFORE" "AFTER" [DIVISOR]: per-key difference of two "k=v ..." lines (divided by
# DIVISOR, default 1), as "k=v ..." without zero entries, plus total=N.
ops_diff() {
    "${PY:-python3}" - "$1" "$2" "${3:-1}" <<'PYEOF'
import sys
def parse(s):
    d = {}
    for kv in s.split():
        k, _, v = kv.partition("=")
        try:
            d[k] = d.get(k, 0) + float(v)
        except ValueError:
            pass
    return d
a, b, n = parse(sys.argv[1]), parse(sys.argv[2]), float(sys.argv[3])
out = {k: (b.get(k, 0) - a.get(k, 0)) / n for k in sorted(set(a) | set(b))}
out = {k: v for k, v in out.items() if v}
fmt = lambda v: ("%d" % v) if v == int(v) else ("%.1f" % v)
print(" ".join(["%s=%s" % (k, fmt(v)) for k, v in out.items()] + ["total=" + fmt(sum(out.values()))]))
PYEOF
}
