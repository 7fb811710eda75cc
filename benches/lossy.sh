#!/usr/bin/env bash
# Benchmark (not a test): uploads over an emulated slow, lossy link, while the server's
# sizing gauges are scraped every second, to show the advised chunk size converging.
#
#   benches/lossy.sh [/path/to/xferd]          (default: target/release/xferd of this repo)
#
# Link: two network namespaces joined by a veth pair (offloads off, so that everything below
# applies per wire packet). xferd runs in namespace A on 10.77.0.1, the client in B on
# 10.77.0.2. Both ends are rate-limited with `tc ... tbf` (RATE) and both namespaces drop
# LOSS % of the packets arriving over the veth with nftables (`numgen random mod 100`); this
# kernel has no netem. With DELAY_MS > 0, HTTP/3 goes through a userspace UDP relay in B
# that holds every datagram DELAY_MS in each direction (RTT + 2 x DELAY_MS); TCP runs are
# not delayed.
#
# Runs: `xferd upload FILE URL --ca CERT --http 3 --streams STREAMS` (parallel chunk streams
# through /chunked-upload, URL signed with `xferd sign --scheme v3 --method POST`), then the
# same with `--http SECOND_HTTP`. During each, https://10.77.0.1:PORT/metrics is scraped from
# inside A (so scraping does not load the link) every second and these gauges are printed for
# the upload's protocol: xferd_chunk_size_advised_bytes, xferd_network_bandwidth_bytes_per_second,
# xferd_network_rtt_seconds, xferd_network_reliability_ratio, xferd_buffer_size_optimal_bytes
# ("-" when the binary does not export one), plus xferd_upload_bytes_total. At the end: the
# goodput, the SHA-256 of the stored file against the source, and the packets dropped.
#
# Env: SIZE_MB (64), RATE (40mbit), LOSS (2, percent, each direction), DELAY_MS (0),
#      STREAMS (4), SECOND_HTTP (2; "1.1", "2" or "" for none), UPLOAD_TIMEOUT (600 s each),
#      PORT (8443, inside the namespaces), KEEP_WORK=1 keeps the temp dir, PYTHON (python3).
# Needs root, iproute2, nftables, ethtool, openssl: benches/install-lossy.sh.
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # stop_pid, ns_server_setup

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-python3}
SIZE_MB=${SIZE_MB:-64}
RATE=${RATE:-40mbit}
LOSS=${LOSS:-2}
DELAY_MS=${DELAY_MS:-0}
STREAMS=${STREAMS:-4}
SECOND_HTTP=${SECOND_HTTP-2}
UPLOAD_TIMEOUT=${UPLOAD_TIMEOUT:-600}
PORT=${PORT:-8443}
RELAY_PORT=9443
ADDR_A=10.77.0.1
ADDR_B=10.77.0.2

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "not executable: $XFERD" >&2; exit 69; }
XFERD=$(readlink -f "$XFERD")
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 69; }
for tool in ip tc nft openssl sha256sum timeout "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-lossy.sh" >&2; exit 69; }
done
case "$LOSS" in ''|*[!0-9]*) echo "LOSS must be a whole percentage" >&2; exit 64 ;; esac

TAG=$$
NS_A="xferd-lossy-a-$TAG"
NS_B="xferd-lossy-b-$TAG"
VETH_A="xl${TAG}a"
VETH_B="xl${TAG}b"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-lossy.XXXXXX")
XPID=""
SCRAPER=""
RELAY=""
CLIENT=""
cleanup() {
    local rc=$?
    touch "$WORK/stop" 2>/dev/null || true
    stop_pid "$CLIENT"
    stop_pid "$SCRAPER"
    stop_pid "$RELAY"
    stop_pid "$XPID"
    # Anything else still running inside the two namespaces is ours (e.g. an upload client
    # after Ctrl-C): end it by pid before the namespaces go.
    local ns pid left
    for ns in "$NS_A" "$NS_B"; do
        left=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$left" ] || continue
        for pid in $left; do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 1
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    # Removing a namespace removes its end of the veth pair (and so the pair).
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
inA() { ip netns exec "$NS_A" "$@"; }
inB() { ip netns exec "$NS_B" "$@"; }

# ------------------------------------------------------------------ the link
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
ip -n "$NS_A" addr add "$ADDR_A/24" dev "$VETH_A"
ip -n "$NS_B" addr add "$ADDR_B/24" dev "$VETH_B"
for ns_dev in "$NS_A:$VETH_A" "$NS_B:$VETH_B"; do
    ns=${ns_dev%%:*}; dev=${ns_dev#*:}
    ip -n "$ns" link set lo up
    # Segmentation offloads off: every packet the qdisc and nftables see is a wire packet
    # (with UDP GSO on, one drop would take out a whole batch of QUIC datagrams).
    if command -v ethtool >/dev/null; then
        ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off tx-udp-segmentation off >/dev/null 2>&1 || true
    fi
    ip -n "$ns" link set "$dev" gso_max_segs 1 2>/dev/null || true
    ip -n "$ns" link set "$dev" up
    ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$RATE" burst 32kb latency 100ms
    ip netns exec "$ns" nft -f - <<EOF
table inet xferd_lossy {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "$dev" numgen random mod 100 < $LOSS counter drop
    }
}
EOF
done

# ------------------------------------------------------------------ xferd in A
ns_server_setup "$WORK" "$ADDR_A" "$PORT" "$SIZE_MB" "lossy-secret-$RANDOM$RANDOM" "IP:$ADDR_A, IP:$ADDR_B"
CERT="$WORK/tls/cert.pem"
CONF="$WORK/xferd.toml"
# Started directly (not through inA, a function: bash would fork a subshell for it and $!
# would not be xferd). `ip netns exec` execs the command, so $! is xferd itself.
ip netns exec "$NS_A" "$XFERD" serve --config "$CONF" >"$WORK/xferd.log" 2>&1 &
XPID=$!
BASE="https://$ADDR_A:$PORT"
up=0
for _ in $(seq 1 150); do
    kill -0 "$XPID" 2>/dev/null || break
    if [ "$(inA curl -sk --connect-timeout 1 --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/health" || true)" = 200 ]; then
        up=1; break
    fi
    sleep 0.2
done
if [ "$up" != 1 ]; then
    echo "xferd did not answer /health on $BASE (namespace $NS_A) within 30 s; log:" >&2
    tail -n 30 "$WORK/xferd.log" >&2
    exit 1
fi
# Across the link, from B (bounded: a dropped SYN costs a retransmission).
code=$(inB curl -sS --cacert "$CERT" --connect-timeout 10 --max-time 20 --retry 3 -o /dev/null -w '%{http_code}' "$BASE/health" 2>"$WORK/link.err" || true)
if [ "$code" != 200 ]; then
    echo "GET $BASE/health from namespace $NS_B: '$code'" >&2; cat "$WORK/link.err" >&2
    exit 1
fi

# ------------------------------------------------------------------ optional UDP delay relay
UP_HOST=$ADDR_A
UP_PORT=$PORT
if [ "$DELAY_MS" != 0 ]; then
    # The relay listens on B's address; the URL keeps A's name, so the client is pointed at
    # the relay by address instead: the certificate lists both addresses.
    cat >"$WORK/relay.py" <<'EOF'
import asyncio, sys, time
listen_host, listen_port, up_host, up_port, delay_ms, stop_file, max_s = sys.argv[1:8]
delay = int(delay_ms) / 1000.0
deadline = time.monotonic() + float(max_s)

class Upstream(asyncio.DatagramProtocol):
    def __init__(self, front, client):
        self.front, self.client = front, client
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        loop.call_later(delay, self.front.sendto, data, self.client)

class Front(asyncio.DatagramProtocol):
    def __init__(self):
        self.peers = {}
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        loop.create_task(self.forward(data, addr))
    async def forward(self, data, addr):
        up = self.peers.get(addr)
        if up is None:
            fut = loop.create_future()
            self.peers[addr] = fut
            tr, _ = await loop.create_datagram_endpoint(
                lambda: Upstream(self.transport, addr), remote_addr=(up_host, int(up_port)))
            fut.set_result(tr)
            up = fut
        tr = await up if isinstance(up, asyncio.Future) else up
        loop.call_later(delay, tr.sendto, data)

async def main():
    await loop.create_datagram_endpoint(Front, local_addr=(listen_host, int(listen_port)))
    import os
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        await asyncio.sleep(0.2)

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
EOF
    ip netns exec "$NS_B" "$PY" "$WORK/relay.py" "$ADDR_B" "$RELAY_PORT" "$ADDR_A" "$PORT" "$DELAY_MS" "$WORK/stop" \
        $((UPLOAD_TIMEOUT * 3 + 60)) >"$WORK/relay.log" 2>&1 &
    RELAY=$!
    sleep 0.5
    UP_HOST=$ADDR_B
    UP_PORT=$RELAY_PORT
fi

# ------------------------------------------------------------------ scraper (in A)
cat >"$WORK/scrape.py" <<'EOF'
import re, ssl, sys, time, os, urllib.request
url, proto, stop_file, max_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
COLS = [("xferd_chunk_size_advised_bytes", "chunk_advised_B", lambda v: "%d" % v),
        ("xferd_network_bandwidth_bytes_per_second", "bandwidth_MB/s", lambda v: "%.2f" % (v / 1e6)),
        ("xferd_network_rtt_seconds", "rtt_ms", lambda v: "%.1f" % (v * 1e3)),
        ("xferd_network_reliability_ratio", "reliability", lambda v: "%.4f" % v),
        ("xferd_buffer_size_optimal_bytes", "buffer_optimal_B", lambda v: "%d" % v),
        ("xferd_upload_bytes_total", "uploaded_MB", lambda v: "%.1f" % (v / 1e6))]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
print("%6s  %s" % ("t_s", "  ".join("%16s" % c[1] for c in COLS)), flush=True)
t0 = time.monotonic()
while time.monotonic() - t0 < max_s and not os.path.exists(stop_file):
    tick = time.monotonic()
    vals = {}
    try:
        body = urllib.request.urlopen(url, context=ctx, timeout=2).read().decode("utf-8", "replace")
        for line in body.splitlines():
            m = SAMPLE.match(line)
            if not m or m.group(1) not in dict((c[0], 1) for c in COLS):
                continue
            if 'protocol="%s"' % proto not in (m.group(2) or ""):
                continue
            # Several series for one protocol (e.g. per connection): show the largest.
            v = float(m.group(3))
            vals[m.group(1)] = max(v, vals.get(m.group(1), v))
        row = ["%16s" % (c[2](vals[c[0]]) if c[0] in vals else "-") for c in COLS]
    except Exception as e:
        row = ["scrape failed: %s" % e]
    print("%6.1f  %s" % (tick - t0, "  ".join(row)), flush=True)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
EOF

SIZE=$((SIZE_MB * 1024 * 1024))
SRC="$WORK/file.bin"
head -c "$SIZE" /dev/urandom >"$SRC"
SRC_SHA=$(sha256sum "$SRC" | cut -d' ' -f1)

drops() { # ns -> packets dropped by its nft rule so far
    ip netns exec "$1" nft list table inet xferd_lossy 2>/dev/null | awk '/counter packets/ {for (i=1;i<=NF;i++) if ($i=="packets") print $(i+1)}'
}

SUMMARY="$WORK/summary.txt"
: >"$SUMMARY"
upload_run() { # http(3|2|1.1) label
    local http=$1 label=$2 proto name url target out rc=0 t0 t1 da0 db0 da1 db1
    case "$http" in 3) proto=h3 ;; 2) proto=h2 ;; *) proto=h1 ;; esac
    name="lossy/$label.bin"
    url=$(timeout 10 "$XFERD" sign --config "$CONF" --scheme v3 --method POST --path "$name" --expires 2h)
    target=$url
    if [ "$http" = 3 ] && [ "$DELAY_MS" != 0 ]; then
        target="https://$UP_HOST:$UP_PORT/${url#https://*/}"
    fi
    echo
    echo "== $label: xferd upload --http $http --streams $STREAMS, $SIZE_MB MiB, link $RATE, loss $LOSS% each way$([ "$http" = 3 ] && [ "$DELAY_MS" != 0 ] && echo ", +${DELAY_MS} ms each way (UDP relay)")"
    rm -f "$WORK/stop"
    ip netns exec "$NS_A" "$PY" "$WORK/scrape.py" "$BASE/metrics" "$proto" "$WORK/stop" $((UPLOAD_TIMEOUT + 10)) &
    SCRAPER=$!
    da0=$(drops "$NS_A"); db0=$(drops "$NS_B")
    t0=$(date +%s.%N)
    # In the background + wait, so that Ctrl-C reaches the cleanup at once (the client runs
    # under `timeout`, in a process group of its own that the terminal's SIGINT misses).
    ip netns exec "$NS_B" timeout "$UPLOAD_TIMEOUT" "$XFERD" upload "$SRC" "$target" --ca "$CERT" \
        --http "$http" --streams "$STREAMS" >"$WORK/$label.json" 2>"$WORK/$label.err" &
    CLIENT=$!
    wait "$CLIENT" || rc=$?
    CLIENT=""
    t1=$(date +%s.%N)
    sleep 1.2   # one more scrape after the end
    touch "$WORK/stop"
    stop_pid "$SCRAPER"; SCRAPER=""
    da1=$(drops "$NS_A"); db1=$(drops "$NS_B")
    local stored="$WORK/data/$name" got
    got=$([ -f "$stored" ] && sha256sum "$stored" | cut -d' ' -f1 || echo "no file")
    "$PY" - "$WORK/$label.json" "$rc" "$t0" "$t1" "$SIZE" "$label" "$got" "$SRC_SHA" \
        "$((da1 - da0))" "$((db1 - db0))" "$UPLOAD_TIMEOUT" <<'EOF' | tee -a "$SUMMARY"
import json, sys
js, rc, t0, t1, size, label, got, want, drop_up, drop_down, limit = sys.argv[1:12]
rc = int(rc); wall = float(t1) - float(t0); size = int(size)
try:
    d = json.loads(open(js).read().strip().splitlines()[-1])
except Exception:
    d = {}
if rc == 0 and d.get("seconds"):
    status = "completed"
    goodput = "%.2f MB/s (%.1f Mbit/s) over %.1f s (client's clock; wall %.1f s)" % (
        size / d["seconds"] / 1e6, size * 8 / d["seconds"] / 1e6, d["seconds"], wall)
elif rc == 124:
    status, goodput = "TIMED OUT after %s s" % limit, "-"
else:
    status, goodput = "FAILED (exit %d)" % rc, "-"
print("%s: upload %s; goodput %s" % (label, status, goodput))
print("%s: stored file SHA-256 %s (%s)" % (label, "matches the source" if got == want else "MISMATCH", got))
print("%s: packets dropped by nftables: client->server %s, server->client %s" % (label, drop_up, drop_down))
EOF
    if [ "$rc" != 0 ]; then sed 's/^/    | /' "$WORK/$label.err" | head -n 20; fi
}

echo "== xferd lossy-link upload"
echo "date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:      $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$([ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n1)" ] && echo +dirty)"
echo "xferd:       $XFERD"
echo "link:        veth $NS_A ($ADDR_A, server) <-> $NS_B ($ADDR_B, client); tbf $RATE each way; nftables drop $LOSS% of packets each way; offloads off"
echo "udp buffers: net.core.rmem_max = $(inA sysctl -n net.core.rmem_max 2>/dev/null), net.core.wmem_max = $(inA sysctl -n net.core.wmem_max 2>/dev/null) (in $NS_A)"
echo "file:        $SIZE_MB MiB random; client: xferd upload (chunked, $STREAMS streams)"

upload_run 3 h3
if [ -n "$SECOND_HTTP" ]; then
    upload_run "$SECOND_HTTP" "h${SECOND_HTTP%.1}"
fi
echo
echo "== summary"
cat "$SUMMARY"
if grep -q panicked "$WORK/xferd.log"; then echo "xferd's log has a panic:"; grep -m3 -A3 panicked "$WORK/xferd.log"; fi
