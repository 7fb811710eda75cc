#!/usr/bin/env python3
"""Many-connection loads for benches/compare.sh (memory rows). asyncio + ssl, HTTP/1.1.

    load.py slow --url-base https://127.0.0.1:PORT --secret S --n 1000 --rate 65536 --size 1048576
        N concurrent signed PUTs (v3 URLs signed here, independently of xferd), each sending
        SIZE bytes at RATE bytes/s. Prints one JSON object: how many got 201, elapsed time.
    load.py idle --host 127.0.0.1 --port PORT --n 10000 --hold 10
        N TLS connections, handshake completed, no request, held open for HOLD seconds after
        the last one is up. Prints how many were up at once and how many the server closed.

The server's memory is sampled by compare.sh, not here.
"""
import argparse
import asyncio
import hashlib
import hmac
import json
import os
import ssl
import sys
import time
import urllib.parse


def v3_url(base, secret, path, expires_in=7200):
    expires = int(time.time()) + expires_in
    msg = "PUT\n%d\n/%s" % (expires, path)
    mac = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    return "%s/%s?v3=%s&expires=%d" % (base.rstrip("/"), urllib.parse.quote(path), mac, expires)


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def slow_put(url, size, rate, ctx, results, start_gate):
    u = urllib.parse.urlsplit(url)
    await start_gate.wait()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(u.hostname, u.port, ssl=ctx), 60)
        target = u.path + ("?" + u.query if u.query else "")
        head = ("PUT %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n"
                "Content-Type: application/octet-stream\r\n\r\n" % (target, u.hostname, u.port, size))
        writer.write(head.encode())
        piece = max(1, rate // 8)   # 8 writes a second
        block = os.urandom(piece)
        sent = 0
        t0 = time.monotonic()
        while sent < size:
            n = min(piece, size - sent)
            writer.write(block[:n])
            await writer.drain()
            sent += n
            # Pace to RATE bytes/s from the start of this upload.
            lag = sent / rate - (time.monotonic() - t0)
            if lag > 0:
                await asyncio.sleep(lag)
        line = await asyncio.wait_for(reader.readline(), 120)
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 else 0
        results.append(status)
        writer.close()
    except Exception as e:  # counted, not fatal: the report says how many succeeded
        results.append(type(e).__name__)


async def slow(a):
    ctx = tls_context()
    results = []
    gate = asyncio.Event()
    tasks = [asyncio.create_task(slow_put(
        v3_url(a.url_base, a.secret, "slow/%d-%d.bin" % (os.getpid(), i)), a.size, a.rate, ctx,
        results, gate)) for i in range(a.n)]
    t0 = time.monotonic()
    gate.set()
    await asyncio.gather(*tasks)
    ok = sum(1 for r in results if r == 201)
    errors = {}
    for r in results:
        if r != 201:
            errors[str(r)] = errors.get(str(r), 0) + 1
    print(json.dumps({"uploads": a.n, "created": ok, "other": errors,
                      "seconds": round(time.monotonic() - t0, 1), "rate": a.rate, "size": a.size}))


async def idle(a):
    ctx = tls_context()
    conns = []
    reasons = {}   # why connections failed to open: exception type and text, counted
    sem = asyncio.Semaphore(200)   # handshakes in flight at once

    async def one():
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port, ssl=ctx), 60)
                conns.append((r, w))
            except Exception as e:
                why = f"{type(e).__name__}: {e}"[:120]
                reasons[why] = reasons.get(why, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*[one() for _ in range(a.n)])
    up = len(conns)
    ready = time.monotonic() - t0
    # Tell compare.sh that every connection is up (it samples the server's RSS now).
    if a.ready_file:
        open(a.ready_file, "w").write(str(up))
    await asyncio.sleep(a.hold)
    closed = sum(1 for r, _ in conns if r.at_eof())
    for _, w in conns:
        w.close()
    print(json.dumps({"asked": a.n, "up": up, "failed": sum(reasons.values()),
                      "why": reasons, "closed_by_server": closed,
                      "seconds_to_open": round(ready, 1), "hold": a.hold}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slow")
    s.add_argument("--url-base", required=True)
    s.add_argument("--secret", required=True)
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--rate", type=int, default=65536)
    s.add_argument("--size", type=int, default=1 << 20)
    i = sub.add_parser("idle")
    i.add_argument("--host", default="127.0.0.1")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--n", type=int, default=10000)
    i.add_argument("--hold", type=float, default=10)
    i.add_argument("--ready-file")
    a = p.parse_args()
    asyncio.run(slow(a) if a.cmd == "slow" else idle(a))


if __name__ == "__main__":
    sys.exit(main())
