#!/usr/bin/env bash
# Benchmark (not a test): issue 16, what 0-RTT resumption buys a reconnecting client. Over
# `xferd wire` between two network namespaces at RTT 50 ms and 150 ms (DELAYS_MS, one-way
# delays 25 and 75), with `[server] zero_rtt` true and then false, a client that reconnects
# before every request (resuming with the session ticket of its previous connection):
#   get_ttfb         time from "connect" to the first byte of a small GET (1 KB file);
#   put_total        total time of a fresh connection + a 1 MB signed PUT, as the client
#                    does it by default (xferd's client holds a PUT until the handshake);
#   put_total_early  the same, the PUT sent in 0-RTT early data (xferd's client with
#                    `send_unsafe_requests_early`; pycurl does this by itself).
# Clients: xferd's own (the ignored test `bench_reconnecting_client` in tests/zero_rtt.rs,
# a debug build) and pycurl (libcurl + ngtcp2, CURLSSLOPT_EARLYDATA, one share handle for
# the TLS sessions, a new connection per request). Prints medians of RUNS (10) per cell and
# the ratio with/without 0-RTT.
#
#   benches/zerortt.sh [/path/to/xferd]        (default: target/release/xferd of this repo)
#
# Env: RUNS (10), DELAYS_MS ("25 75"), RATE (100mbit), PORT (8443), HARNESS (the test
#      binary; default: built with `cargo test --test zero_rtt --no-run`), KEEP_WORK=1.
# Needs root, iproute2, openssl, curl, python3 with pycurl (interop/http/install.sh).
set -euo pipefail
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/../interop" && pwd)/lib.sh"  # stop_pid, ns_server_setup

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-10}
DELAYS_MS=${DELAYS_MS:-25 75}
RATE=${RATE:-100mbit}
PORT=${PORT:-8443}
ADDR_A=10.79.0.1
ADDR_B=10.79.0.2

XFERD=${1:-$REPO/target/release/xferd}
[ -x "$XFERD" ] || { echo "not executable: $XFERD" >&2; exit 69; }
XFERD=$(readlink -f "$XFERD")
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 69; }
for tool in ip openssl curl timeout python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run benches/install-lossy.sh" >&2; exit 69; }
done
python3 -c 'import pycurl, sys; sys.exit(0 if pycurl.version_info()[4] & pycurl.VERSION_HTTP3 else 1)' ||
    { echo "pycurl with HTTP/3 missing: run interop/http/install.sh" >&2; exit 69; }
[ -c /dev/net/tun ] || { echo "no /dev/net/tun" >&2; exit 69; }
HARNESS=${HARNESS:-$(cd "$REPO" && cargo test --test zero_rtt --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "zero_rtt": print(m["executable"])' | tail -n1)}
[ -x "$HARNESS" ] || { echo "no test harness (cargo test --test zero_rtt --no-run)" >&2; exit 69; }

TAG=$$
NS_A="xferd-zrtt-a-$TAG"
NS_B="xferd-zrtt-b-$TAG"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xferd-zrtt.XXXXXX")
XPID=""
WIRE=""
cleanup() {
    local rc=$?
    stop_pid "$XPID"
    stop_pid "$WIRE"
    ns_remove "$NS_A" "$NS_B"
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wire_ns_pair "$NS_A" "$NS_B" "$ADDR_A" "$ADDR_B"

ns_server_setup "$WORK" "$ADDR_A" "$PORT" 10 "zrtt-secret-$RANDOM$RANDOM"
CERT="$WORK/tls/cert.pem"
BASE="https://$ADDR_A:$PORT"
RESULTS="$WORK/results.tsv"   # rtt  zero_rtt  client  metric  run  seconds  resumed
: >"$RESULTS"
head -c 1000000 /dev/zero | tr '\0' 'x' >"$WORK/1mb.bin"
head -c 1000 "$WORK/1mb.bin" >"$WORK/1kb.bin"

PYCURL_CLIENT='
import sys, pycurl
base, ca, runs, get_path, urls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
urls = iter(open(urls).read().split())
body = open(sys.argv[6], "rb").read()
share = pycurl.CurlShare()
share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
def one(path, put=False):
    c = pycurl.Curl()
    c.setopt(pycurl.SHARE, share)
    c.setopt(pycurl.URL, base + path)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.CAINFO, ca)
    c.setopt(pycurl.SSL_OPTIONS, pycurl.SSLOPT_EARLYDATA)
    c.setopt(pycurl.TIMEOUT, 30)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.HTTPHEADER, ["Expect:"])
    c.setopt(pycurl.WRITEFUNCTION, lambda b: None)
    if put:
        c.setopt(pycurl.CUSTOMREQUEST, "PUT")
        c.setopt(pycurl.POSTFIELDS, body)
    c.perform()
    r = (c.getinfo(pycurl.RESPONSE_CODE), c.getinfo(pycurl.STARTTRANSFER_TIME),
         c.getinfo(pycurl.TOTAL_TIME), c.getinfo(pycurl.EARLYDATA_SENT_T) > 0)
    c.close()
    return r
import time
one("/health"); time.sleep(0.5)
for metric in ("get_ttfb", "put_total_early"):
    for run in range(1, runs + 1):
        time.sleep(0.3)
        if metric == "get_ttfb":
            code, ttfb, total, early = one(get_path)
            secs = ttfb
        else:
            code, ttfb, total, early = one(next(urls), put=True)
            secs = total
        assert code in (200, 201), (metric, run, code)
        print("pycurl\t%s\t%d\t%.4f\t%s" % (metric, run, secs, "true" if early else "false"), flush=True)
'

sign_urls() { # count prefix -> file of path?query lines
    local n=$1 prefix=$2 out="$WORK/urls.${2//\//-}" i url
    : >"$out"
    for i in $(seq 1 "$n"); do
        url=$("$XFERD" sign --config "$WORK/xferd.toml" --path "$prefix/$i.bin" --expires 2h)
        echo "/${url#"$BASE/"}" >>"$out"
    done
    echo "$out"
}

run_server() { # zero_rtt (true|false)
    sed -i "/^zero_rtt = /d" "$WORK/xferd.toml"
    sed -i "s/^\[server\]$/[server]\nzero_rtt = $1/" "$WORK/xferd.toml"
    ip netns exec "$NS_A" "$XFERD" serve --config "$WORK/xferd.toml" >"$WORK/xferd.$1.log" 2>&1 &
    XPID=$!
    local _
    for _ in $(seq 1 100); do
        ip netns exec "$NS_B" curl -sS --cacert "$CERT" --max-time 5 -o /dev/null "$BASE/health" 2>/dev/null && return 0
        sleep 0.3
    done
    echo "xferd did not answer across the link" >&2; tail -n 20 "$WORK/xferd.$1.log" >&2; exit 1
}

echo "== xferd 0-RTT resumption, reconnecting clients (issue 16)"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)$([ -n "$(git -C "$REPO" status --porcelain 2>/dev/null | head -n1)" ] && echo +dirty)"
echo "machine: $(nproc) cores, $(uname -r); server $XFERD; xferd client: $HARNESS"
echo "clients: pycurl $(python3 -c 'import pycurl; print(pycurl.version)')"
for delay in $DELAYS_MS; do
    rtt=$((2 * delay))
    "$XFERD" wire --netns-a "$NS_A" --netns-b "$NS_B" --delay-ms "$delay" --rate "$RATE" \
        --loss 0 --queue-ms 100 >"$WORK/wire.out" 2>"$WORK/wire.log" &
    WIRE=$!
    sleep 0.3
    for zr in true false; do
        run_server "$zr"
        SMALL="zrtt/small.bin"
        small=$("$XFERD" sign --config "$WORK/xferd.toml" --path "$SMALL")
        ip netns exec "$NS_B" curl -sS --cacert "$CERT" -T "$WORK/1kb.bin" -o /dev/null "$small" || true
        urls=$(sign_urls $((2 * RUNS)) "zrtt/x-$rtt-$zr")
        ZB_ADDR="$ADDR_A:$PORT" ZB_NAME="$ADDR_A" ZB_CA="$CERT" ZB_RUNS="$RUNS" ZB_GET="/$SMALL" ZB_URLS="$urls" \
            ip netns exec "$NS_B" timeout 600 "$HARNESS" --ignored --exact bench_reconnecting_client \
            --nocapture --test-threads 1 2>"$WORK/harness.err" | grep -oP 'xferd\t.*' |
            sed "s/^/$rtt\t$zr\t/" >>"$RESULTS" || { echo "xferd client failed:" >&2; tail "$WORK/harness.err" >&2; }
        purls=$(sign_urls "$RUNS" "zrtt/p-$rtt-$zr")
        ip netns exec "$NS_B" timeout 600 python3 -c "$PYCURL_CLIENT" "$BASE" "$CERT" "$RUNS" "/$SMALL" "$purls" \
            "$WORK/1mb.bin" 2>"$WORK/pycurl.err" | sed "s/^/$rtt\t$zr\t/" >>"$RESULTS" ||
            { echo "pycurl failed:" >&2; tail "$WORK/pycurl.err" >&2; }
        stop_pid "$XPID"; XPID=""
        rm -rf "$WORK/data/zrtt"
    done
    stop_pid "$WIRE"; WIRE=""
done
echo
echo "== medians of $RUNS (seconds); ratio = with 0-RTT / without; resumed = runs that sent early data"
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cells = {}
for rtt, zr, client, metric, run, secs, resumed in rows:
    cells.setdefault((int(rtt), client, metric, zr), []).append((float(secs), resumed == "true"))
print("%-4s %-7s %-16s %10s %10s %7s %8s %14s" % ("RTT", "client", "metric", "0-RTT on", "off", "ratio", "saved", "resumed on/off"))
for (rtt, client, metric) in sorted({k[:3] for k in cells}):
    on, off = cells.get((rtt, client, metric, "true"), []), cells.get((rtt, client, metric, "false"), [])
    if not on or not off:
        continue
    m_on = statistics.median(s for s, _ in on)
    m_off = statistics.median(s for s, _ in off)
    print("%-4d %-7s %-16s %10.4f %10.4f %7.2f %6.0fms %7d/%d %d/%d" % (
        rtt, client, metric, m_on, m_off, m_on / m_off, (m_off - m_on) * 1000,
        sum(r for _, r in on), len(on), sum(r for _, r in off), len(off)))
EOF
