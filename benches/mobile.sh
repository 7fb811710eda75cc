#!/usr/bin/env bash
# Benchmark (not a test): issue 5's scenario (a). A 200 MB upload over an emulated mobile
# link (50 ms RTT, 2% loss, 50 Mbit/s) with xferd's own client over HTTP/3 (parallel chunk
# streams on one QUIC connection) against a plain HTTP/1.1 PUT with curl, over the same link
# in the same run; prints the goodput of each, medians and the ratio.
#
#   benches/mobile.sh [/path/to/xferd]          (default: target/release/xferd of this repo)
#
# Link: two network namespaces, each with a TUN device; `xferd wire` forwards every IP packet
# between them with random loss (LOSS % each way), a rate limit (RATE) with a bounded queue
# (QUEUE_MS) and a one-way delay (DELAY_MS each way). Because whole packets cross, TCP and
# QUIC both see the real RTT, loss and queueing (this kernel has no netem, and a relay that
# terminates TCP would hide the delay from the lossy leg).
#
# TCP's congestion control is the sender's, i.e. the client's (set on the client namespace's
# route to the server, `congctl`): curl runs once per algorithm in TCP_CCS (default "cubic bbr": cubic is Linux's and Android's default, bbr is
# this machine's). QUIC's is the xferd client's (quinn), chosen with `--congestion`: the
# client runs once per algorithm in QUIC_CCS (default "bbr", the client's default).
#
# Env: SIZE_MB (200, MB = 10^6 bytes as the issue says), RATE (50mbit), DELAY_MS (25),
#      LOSS (2), QUEUE_MS (100), RUNS (3), TCP_CCS ("cubic bbr"), QUIC_CCS ("bbr"),
#      STREAMS ("" = the server's advice), RUN_TIMEOUT (1200 s per upload), PORT (8443),
#      KEEP_WORK=1 keeps the temp dir.
#      MOVE_AT=S: S seconds into every upload the client moves to another address (its
#      address 10.78.0.2 is removed and 10.78.0.3 added, as when a phone changes network):
#      xferd's QUIC connection migrates; a TCP connection cannot, so curl stalls and is
#      stopped after 30 s without progress (`--speed-time 30`) and counted as failed.
# Needs root, iproute2, openssl, curl: benches/install-lossy.sh.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # stop_pid, ns_server_setup

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SIZE_MB=${SIZE_MB:-200}
RATE=${RATE:-50mbit}
DELAY_MS=${DELAY_MS:-25}
LOSS=${LOSS:-2}
QUEUE_MS=${QUEUE_MS:-100}
RUNS=${RUNS:-3}
TCP_CCS=${TCP_CCS:-cubic bbr}
QUIC_CCS=${QUIC_CCS:-bbr}
STREAMS=${STREAMS:-}
MOVE_AT=${MOVE_AT:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-1200}
PORT=${PORT:-8443}
ADDR_A=10.78.0.1
ADDR_B=10.78.0.2
ADDR_B2=10.78.0.3   # the client's address after a move (MOVE_AT)

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "not executable: $XFERD" >&2; exit 69; }
XFERD=$(readlink -f "$XFERD")
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 69; }
for tool in ip openssl curl sha256sum timeout python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-lossy.sh" >&2; exit 69; }
done
[ -c /dev/net/tun ] || { echo "no /dev/net/tun" >&2; exit 69; }

TAG=$$
NS_A="xferd-mobile-a-$TAG"
NS_B="xferd-mobile-b-$TAG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-mobile.XXXXXX")
XPID=""
WIRE=""
CLIENT=""
cleanup() {
    local rc=$?
    stop_pid "$CLIENT"
    stop_pid "$XPID"
    stop_pid "$WIRE"
    ns_remove "$NS_A" "$NS_B"
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ the link
wire_ns_pair "$NS_A" "$NS_B" "$ADDR_A" "$ADDR_B"
ip -n "$NS_A" route add "$ADDR_B2" dev xw0   # for the client's second address (MOVE_AT)
"$XFERD" wire --netns-a "$NS_A" --netns-b "$NS_B" --delay-ms "$DELAY_MS" --rate "$RATE" \
    --loss "$LOSS" --queue-ms "$QUEUE_MS" >"$WORK/wire.out" 2>"$WORK/wire.log" &
WIRE=$!
sleep 0.3
kill -0 "$WIRE" 2>/dev/null || { echo "xferd wire failed:" >&2; cat "$WORK/wire.log" >&2; exit 1; }

# ------------------------------------------------------------------ xferd in A
ns_server_setup "$WORK" "$ADDR_A" "$PORT" "$SIZE_MB" "mobile-secret-$RANDOM$RANDOM"
CERT="$WORK/tls/cert.pem"
CONF="$WORK/xferd.toml"
ip netns exec "$NS_A" "$XFERD" serve --config "$CONF" >"$WORK/xferd.log" 2>&1 &
XPID=$!
BASE="https://$ADDR_A:$PORT"
up=0
for _ in $(seq 1 100); do
    kill -0 "$XPID" 2>/dev/null || break
    code=$(ip netns exec "$NS_B" curl -sS --cacert "$CERT" --connect-timeout 2 --max-time 5 \
        -o /dev/null -w '%{http_code}' "$BASE/health" 2>/dev/null || true)
    [ "$code" = 200 ] && { up=1; break; }
    sleep 0.3
done
[ "$up" = 1 ] || { echo "xferd did not answer across the link; log:" >&2; tail -n 30 "$WORK/xferd.log" >&2; exit 1; }
RTT_MS=$(ip netns exec "$NS_B" curl -sS --cacert "$CERT" -o /dev/null -w '%{time_connect}' "$BASE/health" |
    python3 -c 'import sys; print("%.1f" % (float(sys.stdin.read()) * 1000))')

SIZE=$((SIZE_MB * 1000 * 1000))
SRC="$WORK/file.bin"
head -c "$SIZE" /dev/urandom >"$SRC"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

RESULTS="$WORK/results.tsv"   # label  run  seconds  sha_ok
: >"$RESULTS"

# One upload; appends a line to RESULTS. $1 label, $2 run, $3 stored name, rest: command.
timed() {
    local label=$1 run=$2 name=$3 rc=0 t0 t1 got ok mover=""
    shift 3
    t0=$(date +%s.%N)
    ip netns exec "$NS_B" timeout "$RUN_TIMEOUT" "$@" >"$WORK/$label.$run.out" 2>"$WORK/$label.$run.err" &
    CLIENT=$!
    if [ -n "$MOVE_AT" ]; then
        (sleep "$MOVE_AT"
         ip -n "$NS_B" addr del "$ADDR_B" peer "$ADDR_A" dev xw0
         ip -n "$NS_B" addr add "$ADDR_B2" peer "$ADDR_A" dev xw0) &
        mover=$!
    fi
    wait "$CLIENT" || rc=$?
    CLIENT=""
    t1=$(date +%s.%N)
    if [ -n "$mover" ]; then
        kill "$mover" 2>/dev/null || true; wait "$mover" 2>/dev/null || true
        ip -n "$NS_B" addr del "$ADDR_B2" peer "$ADDR_A" dev xw0 2>/dev/null || true
        ip -n "$NS_B" addr add "$ADDR_B" peer "$ADDR_A" dev xw0 2>/dev/null || true
        [ "$label" = "${label#xferd}" ] || echo "  $label run $run: $(grep -o '"migrations":[0-9]*' "$WORK/$label.$run.out" || echo 'no report')"
    fi
    got=$([ -f "$WORK/data/$name" ] && sha256sum "$WORK/data/$name" | cut -d' ' -f1 || echo none)
    ok=$([ "$got" = "$SRC_SHA" ] && echo yes || echo no)
    if [ "$rc" != 0 ]; then
        echo "  $label run $run: exit $rc"; sed 's/^/    | /' "$WORK/$label.$run.err" | tail -n 5
        printf '%s\t%s\t%s\t%s\n' "$label" "$run" "fail" "$ok" >>"$RESULTS"
    else
        printf '%s\t%s\t%s\t%s\n' "$label" "$run" "$(echo "$t1 - $t0" | bc -l)" "$ok" >>"$RESULTS"
        printf '  %-16s run %s: %6.1f s  %6.2f Mbit/s  SHA-256 %s\n' "$label" "$run" "$(echo "$t1 - $t0" | bc -l)" \
            "$(echo "$SIZE * 8 / ($t1 - $t0) / 1000000" | bc -l)" "$([ "$ok" = yes ] && echo match || echo MISMATCH)"
    fi
    rm -f "$WORK/data/$name"
}

h3_run() { # cc run
    local name="mobile/h3-$1-$2.bin" url
    url=$("$XFERD" sign --config "$CONF" --scheme v3 --method POST --path "$name" --expires 2h)
    local args=(upload "$SRC" "$url" --ca "$CERT" --http 3 -q --congestion "$1")
    [ -n "$STREAMS" ] && args+=(--streams "$STREAMS")
    timed "xferd-h3-$1" "$2" "$name" "$XFERD" "${args[@]}"
}

curl_run() { # cc run
    local name="mobile/h1-$1-$2.bin" url
    # Per route (the namespace's sysctl only allows what the host allows).
    ip -n "$NS_B" route replace "$ADDR_A" dev xw0 src "$ADDR_B" congctl "$1"
    url=$("$XFERD" sign --config "$CONF" --scheme v3 --method PUT --path "$name" --expires 2h)
    local stall=()
    [ -n "$MOVE_AT" ] && stall=(--speed-limit 1 --speed-time 30)
    timed "curl-h1-$1" "$2" "$name" curl -sS --http1.1 --cacert "$CERT" -T "$SRC" -o /dev/null --fail "${stall[@]}" "$url"
}

echo "== xferd mobile-link upload (issue 5, scenario a)"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$([ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n1)" ] && echo +dirty)"
echo "machine: $(nproc) cores, $(uname -r)"
echo "link:    xferd wire between TUN devices in two namespaces: $RATE each way, ${DELAY_MS} ms each way, $LOSS% random loss each way, queue ${QUEUE_MS} ms; TCP connect took $RTT_MS ms"
[ -n "$MOVE_AT" ] && echo "move:    ${MOVE_AT} s into every upload the client's address changes $ADDR_B -> $ADDR_B2"
echo "file:    $SIZE_MB MB random; udp buffers: rmem_max $(sysctl -n net.core.rmem_max), wmem_max $(sysctl -n net.core.wmem_max)"
echo "clients: xferd upload --http 3 (chunked session${STREAMS:+, $STREAMS streams}; QUIC cc: $QUIC_CCS); curl $(curl -V | head -n1 | cut -d' ' -f2) --http1.1 -T (TCP cc: $TCP_CCS)"
for run in $(seq 1 "$RUNS"); do
    for cc in $QUIC_CCS; do h3_run "$cc" "$run"; done
    for cc in $TCP_CCS; do curl_run "$cc" "$run"; done
done
echo
echo "== wire"
kill -TERM "$WIRE" 2>/dev/null; wait "$WIRE" 2>/dev/null || true; WIRE=""
sed 's/^/  /' "$WORK/wire.log" | tail -n 3
echo
echo "== medians ($RUNS runs each, goodput = $SIZE_MB MB / wall time of the client process)"
python3 - "$RESULTS" "$SIZE" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
size = int(sys.argv[2])
by = {}
for label, run, secs, ok in rows:
    by.setdefault(label, []).append((secs, ok))
med = {}
for label, rs in by.items():
    good = [float(s) for s, ok in rs if s != "fail" and ok == "yes"]
    bad = len(rs) - len(good)
    if good:
        m = statistics.median(good)
        med[label] = size * 8 / m / 1e6
        print("  %-16s %7.2f Mbit/s  (median of %d; %d failed or mismatched)" % (label, med[label], len(good), bad))
    else:
        print("  %-16s no successful run" % label)
for ours, a in med.items():
    if not ours.startswith("xferd-"):
        continue
    for theirs, b in med.items():
        if theirs.startswith("curl-"):
            print("  ratio %s / %s: %.2fx" % (ours, theirs, a / b))
EOF
if grep -q panicked "$WORK/xferd.log"; then echo "xferd's log has a panic:"; grep -m3 -A3 panicked "$WORK/xferd.log"; fi
