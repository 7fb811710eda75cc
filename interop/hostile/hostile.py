#!/usr/bin/env python3
"""Hostile-load suite for xferd (issue 15 section 2). Loopback only, bounded in time and count.

    hostile.py run XFERD [--only CASE,...] [--keep]
    hostile.py good URL SHA256 PROTOS OUT STOP    (internal: the well-behaved client)

Each case starts a fresh xferd (config in a temp dir, free port, self-signed TLS, signed
downloads required), uploads a small and a large file, then runs its attack for a bounded
time from 127.0.0.2 while
  - the server's RSS is sampled (/proc/PID/status VmRSS every 100 ms, VmHWM at the end) and
    must stay under the case's stated bound,
  - a well-behaved client (a separate process: pycurl, a fresh connection per request) makes
    a signed GET of the small file every 200 ms over HTTP/1.1 (and HTTP/3 in the QUIC
    cases); every answer must be 200 with the right SHA-256 within 1 s,
  - the server log must not contain "panicked",
and afterwards GET /health must answer 200. Attacks that get answers also check them (no 5xx
for a client's mistake, no range amplification, oversized heads refused).
Prints a table (case, load, RSS bound, peak RSS, good-client p50/max latency, outcome) and a
summary line; exits 1 on any failure.
"""
import asyncio
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ATTACKER = "127.0.0.2"  # the attack's source address; the good client uses 127.0.0.1
HEADER_READ_TIMEOUT = 5  # seconds, set in every case's config
MAX_CONNECTIONS = 1024  # xferd's default, written out in the config
SMALL = 4096
BIG = 16 << 20

# ---------------------------------------------------------------- signing (v3, see interop/http/v3sign.py)


def sign(secret, base, method, path, expires_in=3600):
    expires = int(time.time()) + expires_in
    msg = "%s\n%d\n/%s" % (method, expires, path)
    mac = hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()
    return "%s/%s?v3=%s&expires=%d" % (base, urllib.parse.quote(path, safe="/"), mac, expires)


def path_q(url):
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


# ---------------------------------------------------------------- HTTP/2 frames (RFC 9113), by hand

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid & 0x7FFFFFFF) + payload


def hp_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman (RFC 7541 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode() if isinstance(value, str) else value
        out += b"\x00" + hp_int(len(n), 7) + n + hp_int(len(v), 7) + v
    return bytes(out)


def request_block(method, target, port, extra=()):
    return hpack([(":method", method), (":scheme", "https"), (":authority", "127.0.0.1:%d" % port),
                  (":path", target)] + list(extra))


# ---------------------------------------------------------------- connections

def tls_ctx(alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


CTX_H1 = tls_ctx(["http/1.1"])
CTX_H2 = tls_ctx(["h2"])


async def connect(env, ctx, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((ATTACKER, 0))
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", env["port"])), 5)
        if ctx is None:
            return await asyncio.open_connection(sock=sock)
        return await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="127.0.0.1"), 10)
    except BaseException:
        sock.close()
        raise


async def h2_connect(env, rcvbuf=None):
    r, w = await connect(env, CTX_H2, rcvbuf)
    w.write(PREFACE + frame(SETTINGS, 0, 0) + frame(SETTINGS, ACK, 0))
    return r, w


async def h2_frames(reader, stats, on_frame=None):
    """Reads server frames until EOF; counts GOAWAYs (by error code) and RST_STREAMs."""
    try:
        while True:
            head = await reader.readexactly(9)
            n = int.from_bytes(head[:3], "big")
            payload = await reader.readexactly(n) if n else b""
            t = head[3]
            if t == GOAWAY and len(payload) >= 8:
                code = int.from_bytes(payload[4:8], "big")
                stats.setdefault("goaway", {}).setdefault(hex(code), 0)
                stats["goaway"][hex(code)] += 1
            elif t == RST_STREAM:
                stats["rst_from_server"] = stats.get("rst_from_server", 0) + 1
            elif t == HEADERS:
                stats["responses"] = stats.get("responses", 0) + 1
            if on_frame:
                on_frame(t, head[4], payload)
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        pass


def close(w):
    try:
        w.transport.abort()
    except Exception:
        pass


async def read_h1_response(r, limit_body=1 << 30):
    """Status and body length of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    n = 0
    if "content-length" in hdrs:
        want = int(hdrs["content-length"])
        while n < want:
            chunk = await r.read(min(1 << 16, want - n))
            if not chunk:
                raise ConnectionError("body cut short")
            n += len(chunk)
    elif hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await r.readuntil(b"\r\n")
                break
            await r.readexactly(size + 2)
            n += size
            if n > limit_body:
                raise ConnectionError("body over limit")
    return status, hdrs, n


def count(stats, key, by=1):
    stats[key] = stats.get(key, 0) + by


def status_seen(stats, status):
    stats.setdefault("statuses", {}).setdefault(str(status), 0)
    stats["statuses"][str(status)] += 1
    if status >= 500:
        count(stats, "5xx")


# ---------------------------------------------------------------- attacks
# Each takes (env, seconds) and returns (load description, stats, list of failures).


async def until(deadline, coros):
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, timeout=max(0, deadline - time.monotonic()))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def slowloris_h1(env, secs, n=300):
    stats = {}
    t0 = time.monotonic()
    closed_at = []

    async def one(i):
        try:
            r, w = await connect(env, CTX_H1)
        except Exception:
            count(stats, "connect_failed")
            return
        count(stats, "opened")
        w.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % path_q(env["small_url"])).encode())
        junk = b"X-Slow-%d: " % i + b"a" * 4096

        async def dribble():
            for b in junk:
                w.write(bytes([b]))
                await asyncio.sleep(1)

        d = asyncio.ensure_future(dribble())
        try:
            data = await r.read(4096)
            closed_at.append(time.monotonic() - t0)
            if data.startswith(b"HTTP/1.1 5"):
                count(stats, "5xx")
        except Exception:
            closed_at.append(time.monotonic() - t0)
        finally:
            d.cancel()
            close(w)

    await until(t0 + secs, [one(i) for i in range(n)])
    stats["closed_by_server"] = len(closed_at)
    if closed_at:
        stats["last_close_s"] = round(max(closed_at), 1)
    fails = []
    # hyper's header_read_timeout (5 s here) must end every one of them.
    if stats.get("opened", 0) < n * 0.9:
        fails.append("only %d of %d slowloris connections opened" % (stats.get("opened", 0), n))
    if len(closed_at) < stats.get("opened", 0):
        fails.append("%d of %d slow-header connections still open after %d s (header_read_timeout %d s)"
                     % (stats.get("opened", 0) - len(closed_at), stats.get("opened", 0), secs, HEADER_READ_TIMEOUT))
    return "%d h1 conns, header bytes 1/s, %ds" % (n, secs), stats, fails


async def slowloris_h2(env, secs, n=200):
    stats = {}
    t0 = time.monotonic()
    closed = [0]

    async def one(i):
        try:
            r, w = await h2_connect(env)
        except Exception:
            count(stats, "connect_failed")
            return
        count(stats, "opened")
        block = request_block("GET", path_q(env["small_url"]), env["port"], [("x-slow", "a" * 2000)])
        # One HEADERS frame, announced whole, arriving one byte per second.
        wire = frame(HEADERS, END_HEADERS | END_STREAM, 1, block)
        reader = asyncio.ensure_future(h2_frames(r, stats))
        try:
            for b in wire:
                w.write(bytes([b]))
                await asyncio.sleep(1)
                if reader.done():
                    break
            await reader
            closed[0] += 1
        finally:
            reader.cancel()
            close(w)

    await until(t0 + secs, [one(i) for i in range(n)])
    stats["closed_by_server"] = closed[0]
    fails = []
    if stats.get("opened", 0) < n * 0.9:
        fails.append("only %d of %d h2 connections opened" % (stats.get("opened", 0), n))
    return "%d h2 conns, HEADERS 1 byte/s, %ds" % (n, secs), stats, fails


async def idle_tcp(env, secs, n=5000, max_connects=20000):
    """n plain TCP connections that never send a byte, re-opened when the server closes one."""
    stats = {"connects": 0}
    t0 = time.monotonic()
    deadline = t0 + secs
    gate = asyncio.Semaphore(256)  # connects in flight at once

    async def one():
        while time.monotonic() < deadline and stats["connects"] < max_connects:
            async with gate:
                stats["connects"] += 1
                try:
                    r, w = await connect(env, None)
                except Exception:
                    count(stats, "connect_failed")
                    await asyncio.sleep(0.2)
                    continue
            try:
                await r.read(1)  # returns when the server closes it
                count(stats, "closed_by_server")
            except Exception:
                count(stats, "closed_by_server")
            finally:
                close(w)

    await until(deadline, [one() for _ in range(n)])
    return "%d idle TCP conns held %ds (%d connects)" % (n, secs, stats["connects"]), stats, []


async def rapid_reset(env, secs, conns=4, max_streams=200000):
    stats = {"streams": 0, "connections": 0}
    deadline = time.monotonic() + secs
    block = request_block("GET", path_q(env["small_url"]), env["port"])

    async def one():
        while time.monotonic() < deadline and stats["streams"] < max_streams:
            try:
                r, w = await h2_connect(env)
            except Exception:
                count(stats, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            stats["connections"] += 1
            reader = asyncio.ensure_future(h2_frames(r, stats))
            sid = 1
            try:
                while not reader.done() and time.monotonic() < deadline and sid < (1 << 31) - 400:
                    batch = bytearray()
                    for _ in range(100):
                        batch += frame(HEADERS, END_HEADERS | END_STREAM, sid, block)
                        batch += frame(RST_STREAM, 0, sid, struct.pack(">I", 8))  # CANCEL
                        sid += 2
                    stats["streams"] += 100
                    w.write(bytes(batch))
                    await asyncio.wait_for(w.drain(), 5)
            except Exception:
                pass
            finally:
                reader.cancel()
                close(w)

    await until(deadline, [one() for _ in range(conns)])
    return "%d HEADERS+RST_STREAM pairs on %d conns, %ds" % (stats["streams"], stats["connections"], secs), stats, []


async def continuation_flood(env, secs, conns=4, max_frames=2000000):
    stats = {"frames": 0, "connections": 0, "bytes": 0}
    deadline = time.monotonic() + secs
    first = request_block("GET", path_q(env["small_url"]), env["port"])
    cont = hpack([("x-flood", "b" * 16000)])

    async def one():
        while time.monotonic() < deadline and stats["frames"] < max_frames:
            try:
                r, w = await h2_connect(env)
            except Exception:
                count(stats, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            stats["connections"] += 1
            reader = asyncio.ensure_future(h2_frames(r, stats))
            try:
                w.write(frame(HEADERS, END_STREAM, 1, first))
                while not reader.done() and time.monotonic() < deadline:
                    batch = frame(CONTINUATION, 0, 1, cont) * 16
                    stats["frames"] += 16
                    stats["bytes"] += len(batch)
                    w.write(batch)
                    await asyncio.wait_for(w.drain(), 5)
                # The server must have ended the connection, not just stopped reading.
                await asyncio.wait_for(reader, max(0.1, deadline - time.monotonic()))
            except Exception:
                pass
            finally:
                reader.cancel()
                close(w)

    await until(deadline, [one() for _ in range(conns)])
    fails = []
    per_conn = stats["bytes"] / max(1, stats["connections"])
    stats["bytes_per_conn"] = int(per_conn)
    if per_conn > 8 << 20:
        fails.append("the server took %d bytes of one unending header block per connection" % per_conn)
    return "%d CONTINUATION frames (%d MB) on %d conns, %ds" % (
        stats["frames"], stats["bytes"] >> 20, stats["connections"], secs), stats, fails


def h3_request(url, headers=(), timeout=5, nobody=False, method=None):
    import pycurl
    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.SSL_VERIFYPEER, 0)
    c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.TIMEOUT, timeout)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.HTTPHEADER, list(headers))
    if method:
        c.setopt(pycurl.CUSTOMREQUEST, method)
    if nobody:
        c.setopt(pycurl.NOBODY, 1)
    sha = hashlib.sha256()
    c.setopt(pycurl.WRITEFUNCTION, sha.update)
    try:
        c.perform()
        return c.getinfo(pycurl.RESPONSE_CODE), sha.hexdigest(), None
    except pycurl.error as e:
        return 0, None, str(e)
    finally:
        c.close()


async def oversized_headers(env, secs):
    stats = {"h1": {}, "h2": {}, "h3": {}}
    deadline = time.monotonic() + secs
    target = path_q(env["small_url"])

    async def h1(kind):
        s = stats["h1"]
        while time.monotonic() < deadline:
            try:
                r, w = await connect(env, CTX_H1)
            except Exception:
                count(s, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            if kind == "one_big":
                head = "GET %s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % (target, "a" * (1 << 20))
            else:  # many
                head = "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
                    target, "".join("X-H%d: %s\r\n" % (i, "v" * 100) for i in range(2000)))
            try:
                w.write(head.encode())
                status, _, _ = await asyncio.wait_for(read_h1_response(r), 5)
                status_seen(s, status)
            except Exception:
                count(s, "closed_without_answer")
            finally:
                close(w)

    async def h2():
        s = stats["h2"]
        big = hpack([("x-big-%d" % i, "c" * 8000) for i in range(32)])  # 256 KB of fields
        first = request_block("GET", target, env["port"])
        while time.monotonic() < deadline:
            try:
                r, w = await h2_connect(env)
            except Exception:
                count(s, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            got = {}

            def on_frame(t, flags, payload):
                if t == HEADERS and payload[:1]:
                    got["headers"] = payload
            reader = asyncio.ensure_future(h2_frames(r, s, on_frame))
            try:
                w.write(frame(HEADERS, END_STREAM, 1, first))
                chunks = [big[i:i + 16000] for i in range(0, len(big), 16000)]
                for i, c in enumerate(chunks):
                    w.write(frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, c))
                await asyncio.wait_for(w.drain(), 5)
                await asyncio.wait_for(asyncio.shield(reader), 2)
            except Exception:
                pass
            finally:
                count(s, "attempts")
                reader.cancel()
                close(w)

    async def h3():
        s = stats["h3"]
        loop = asyncio.get_running_loop()
        while time.monotonic() < deadline:
            status, _, err = await loop.run_in_executor(
                None, h3_request, env["small_url"], ["X-Big: " + "d" * (200 << 10)], 5)
            if err:
                count(s, "error")
                s["last_error"] = err[:120]
            else:
                status_seen(s, status)

    await until(deadline, [h1("one_big"), h1("many"), h2(), h3()])
    fails = []
    for proto in ("h1", "h2", "h3"):
        if stats[proto].get("5xx"):
            fails.append("%s: %d answers were 5xx" % (proto, stats[proto]["5xx"]))
        ok = {k: v for k, v in stats[proto].get("statuses", {}).items() if k not in ("431", "400", "413")}
        if ok:
            fails.append("%s: an oversized head was answered %s" % (proto, ok))
    if not stats["h3"].get("statuses", {}).get("431"):
        fails.append("h3: no 431 for a 200 KB field section (%s)" % stats["h3"])
    if not stats["h1"].get("statuses", {}).get("431"):
        fails.append("h1: no 431 for a 1 MB head (%s)" % stats["h1"])
    return "1 MB/2000-field h1 heads, 256 KB h2 block, 200 KB h3 field, %ds" % secs, stats, fails


async def ranges(env, secs, conns=4, max_requests=20000):
    stats = {"requests": 0, "max_body": 0}
    deadline = time.monotonic() + secs
    target = path_q(env["big_url"])
    many = "bytes=" + ",".join("%d-%d" % (2 * i, 2 * i) for i in range(1000))
    overlap = "bytes=" + ",".join("%d-%d" % (i, BIG - 1 - i) for i in range(1000))
    same = "bytes=" + ",".join(["0-"] * 1000)
    shapes = [many, overlap, same, "bytes=0-0,-1,1-1,-2,2-2" * 40]

    async def one(k):
        while time.monotonic() < deadline and stats["requests"] < max_requests:
            try:
                r, w = await connect(env, CTX_H1)
            except Exception:
                count(stats, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            try:
                for _ in range(50):
                    if time.monotonic() >= deadline:
                        break
                    rng = shapes[(stats["requests"] + k) % len(shapes)]
                    w.write(("GET %s HTTP/1.1\r\nHost: x\r\nRange: %s\r\n\r\n" % (target, rng)).encode())
                    status, hdrs, n = await asyncio.wait_for(read_h1_response(r, 4 * BIG), 20)
                    stats["requests"] += 1
                    status_seen(stats, status)
                    stats["max_body"] = max(stats["max_body"], n)
                    if hdrs.get("connection", "").lower() == "close":
                        break
            except Exception as e:
                count(stats, "errors")
                stats["last_error"] = repr(e)[:100]
            finally:
                close(w)

    await until(deadline, [one(k) for k in range(conns)])
    fails = []
    if stats.get("5xx"):
        fails.append("%d range requests answered 5xx" % stats["5xx"])
    if stats["max_body"] > BIG + (64 << 10):
        fails.append("a range request sent %d bytes for a %d-byte file (amplification)" % (stats["max_body"], BIG))
    if stats["requests"] < 10:
        fails.append("only %d range requests answered" % stats["requests"])
    return "%d requests of 1000 / overlapping ranges, %ds" % (stats["requests"], secs), stats, fails


def udp_blast(port, deadline, max_packets, make, stats, key):
    socks = []
    for _ in range(64):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ATTACKER, 0))
        s.setblocking(False)
        socks.append(s)
    sent = 0
    i = 0
    try:
        while time.monotonic() < deadline and sent < max_packets:
            for _ in range(256):
                try:
                    socks[i % len(socks)].sendto(make(), ("127.0.0.1", port))
                    sent += 1
                except (BlockingIOError, OSError):
                    time.sleep(0.0005)
                i += 1
    finally:
        for s in socks:
            s.close()
    stats[key] = stats.get(key, 0) + sent


def random_datagram():
    return os.urandom(random.choice((1, 20, 100, 600, 1200, 1350, 1472)))


def fake_initial():
    """A QUIC v1 long-header Initial with a random DCID and an undecryptable payload."""
    dcid, scid = os.urandom(8), os.urandom(8)
    payload = os.urandom(1162)
    return (bytes([0xC3]) + b"\x00\x00\x00\x01" + bytes([8]) + dcid + bytes([8]) + scid
            + b"\x00" + struct.pack(">H", 0x4000 | (len(payload) + 4)) + os.urandom(4) + payload)


async def udp_flood(env, secs, max_packets=3000000):
    stats = {}
    deadline = time.monotonic() + secs
    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.run_in_executor(None, udp_blast, env["port"], deadline, max_packets // 2,
                                                random_datagram, stats, "datagrams") for _ in range(2)])
    return "%d random datagrams, %ds" % (stats.get("datagrams", 0), secs), stats, []


def capture_initials(n):
    """The first flights of n real HTTP/3 handshakes (libcurl/ngtcp2 through pycurl), each its
    own connection ID, caught on a UDP socket that never answers."""
    import pycurl
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((ATTACKER, 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.setblocking(False)
    port = sink.getsockname()[1]
    m = pycurl.CurlMulti()
    handles = []
    for _ in range(n):
        c = pycurl.Curl()
        c.setopt(pycurl.URL, "https://%s:%d/" % (ATTACKER, port))
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
        c.setopt(pycurl.TIMEOUT_MS, 400)
        c.setopt(pycurl.NOSIGNAL, 1)
        m.add_handle(c)
        handles.append(c)
    flights = {}
    end = time.monotonic() + 3
    while time.monotonic() < end:
        _, active = m.perform()
        try:
            while True:
                data, addr = sink.recvfrom(2048)
                # Within TIMEOUT_MS nothing is retransmitted (the first PTO is about 1 s).
                flights.setdefault(addr, []).append(data)
        except BlockingIOError:
            pass
        if not active:
            break
        m.select(0.01)
    for c in handles:
        m.remove_handle(c)
        c.close()
    sink.close()
    return list(flights.values())


async def quic_initials(env, secs, rounds=8, per_round=400, max_fake=2000000):
    """Real first flights replayed from fresh source ports (each a handshake the server must
    start and that never completes), plus a stream of undecryptable Initials."""
    stats = {"handshakes": 0}
    deadline = time.monotonic() + secs
    loop = asyncio.get_running_loop()
    fake = loop.run_in_executor(None, udp_blast, env["port"], deadline, max_fake, fake_initial, stats, "fake_initials")
    held = []
    for _ in range(rounds):
        if time.monotonic() >= deadline:
            break
        flights = await loop.run_in_executor(None, capture_initials, per_round)
        for f in flights:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ATTACKER, 0))
            s.setblocking(False)
            for d in f:
                try:
                    s.sendto(d, ("127.0.0.1", env["port"]))
                except OSError:
                    pass
            held.append(s)  # kept open (never read) so the server's answers are not refused
            stats["handshakes"] += 1
        await asyncio.sleep(0.2)
    await fake
    for s in held:
        s.close()
    return "%d half-open QUIC handshakes + %d junk Initials, %ds" % (
        stats["handshakes"], stats.get("fake_initials", 0), secs), stats, []


async def trickle_uploads(env, secs, n=1000):
    stats = {"opened": 0, "bytes": 0}
    deadline = time.monotonic() + secs
    size = 1 << 20
    gate = asyncio.Semaphore(100)

    async def one(i):
        url = sign(env["secret"], env["base"], "PUT", "trickle/%d.bin" % i)
        try:
            async with gate:  # at most 100 TLS handshakes at once
                r, w = await connect(env, CTX_H1)
        except Exception:
            count(stats, "connect_failed")
            return
        stats["opened"] += 1
        try:
            w.write(("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path_q(url), size)).encode())
            await asyncio.sleep(random.random())
            while time.monotonic() < deadline:
                w.write(os.urandom(1024))
                stats["bytes"] += 1024
                await asyncio.sleep(1)
                if r.at_eof():
                    count(stats, "closed_by_server")
                    break
        except Exception:
            count(stats, "errors")
        finally:
            close(w)

    await until(deadline, [one(i) for i in range(n)])
    fails = []
    if stats["opened"] < n * 0.95:
        fails.append("only %d of %d uploads started" % (stats["opened"], n))
    return "%d PUTs at 1 KiB/s, %ds" % (stats["opened"], secs), stats, fails


async def resumable_flood(env, secs, conns=8, max_requests=200000):
    stats = {"requests": 0}
    deadline = time.monotonic() + secs

    async def one(k):
        while time.monotonic() < deadline and stats["requests"] < max_requests:
            try:
                r, w = await connect(env, CTX_H1)
            except Exception:
                count(stats, "connect_failed")
                await asyncio.sleep(0.1)
                continue
            try:
                for j in range(200):
                    if time.monotonic() >= deadline:
                        break
                    rid = os.urandom(16).hex()  # the engine's id shape: 32 hex digits
                    base = "/files/" if j % 2 == 0 else "/resumable/"
                    is_head = (j // 2) % 2 == 0
                    if is_head:
                        req = ("HEAD %s%s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n\r\n" % (base, rid)).encode()
                    else:
                        body = os.urandom(512)
                        req = ("PATCH %s%s HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: %d\r\n"
                               "Content-Type: application/offset+octet-stream\r\nUpload-Draft-Interop-Version: 6\r\n"
                               "Content-Length: %d\r\n\r\n" % (base, rid, random.randrange(1 << 20), len(body)))
                        req = req.encode() + body
                    w.write(req)
                    if is_head:
                        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
                        status = int(head.split()[1])
                    else:
                        status, hdrs, _ = await asyncio.wait_for(read_h1_response(r), 5)
                    stats["requests"] += 1
                    status_seen(stats, status)
                    if status >= 400 and status != 404 and status != 410:
                        stats.setdefault("non_404", set()).add(status)
            except Exception as e:
                count(stats, "errors")
                stats["last_error"] = repr(e)[:100]
            finally:
                close(w)

    await until(deadline, [one(k) for k in range(conns)])
    if "non_404" in stats:
        stats["non_404"] = sorted(stats["non_404"])
    fails = []
    if stats.get("5xx"):
        fails.append("%d HEAD/PATCH on unknown ids answered 5xx" % stats["5xx"])
    if stats["requests"] < 100:
        fails.append("only %d requests answered" % stats["requests"])
    if stats.get("statuses", {}).get("404", 0) < stats["requests"] * 0.9:
        fails.append("unknown upload ids were not answered 404: %s" % stats.get("statuses"))
    return "%d HEAD/PATCH on random tus/IETF ids, %ds" % (stats["requests"], secs), stats, fails


async def never_read(env, secs, h1_conns=40, h2_conns=10, h2_streams=20):
    stats = {"h1": 0, "h2_streams": 0}
    deadline = time.monotonic() + secs
    target = path_q(env["big_url"])
    holders = []

    async def h1():
        try:
            r, w = await connect(env, CTX_H1, rcvbuf=4096)
        except Exception:
            count(stats, "connect_failed")
            return
        w.write(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
        stats["h1"] += 1
        holders.append(w)
        await asyncio.sleep(deadline - time.monotonic())

    async def h2():
        try:
            r, w = await connect(env, CTX_H2, rcvbuf=4096)
        except Exception:
            count(stats, "connect_failed")
            return
        # Big windows, so that the server may send as much as it likes.
        out = PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, (1 << 31) - 1)) + frame(SETTINGS, ACK, 0)
        out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1 - 65535))
        block = request_block("GET", target, env["port"])
        for k in range(h2_streams):
            out += frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * k, block)
        w.write(out)
        stats["h2_streams"] += h2_streams
        holders.append(w)
        await asyncio.sleep(deadline - time.monotonic())

    await until(deadline, [h1() for _ in range(h1_conns)] + [h2() for _ in range(h2_conns)])
    for w in holders:
        close(w)
    return "%d h1 + %d h2-stream GETs of %d MB never read, %ds" % (
        stats["h1"], stats["h2_streams"], BIG >> 20, secs), stats, []


# name -> (attack, seconds, RSS bound in MiB, good-client protocols)
CASES = [
    ("slowloris-h1", slowloris_h1, 12, 160, "h1"),
    ("slowloris-h2", slowloris_h2, 12, 160, "h1"),
    ("idle-5000", idle_tcp, 12, 200, "h1"),
    ("rapid-reset", rapid_reset, 10, 200, "h1"),
    ("continuation", continuation_flood, 10, 200, "h1"),
    ("oversized-heads", oversized_headers, 10, 200, "h1,h3"),
    ("ranges", ranges, 10, 200, "h1"),
    ("udp-junk", udp_flood, 10, 200, "h1,h3"),
    ("quic-initials", quic_initials, 12, 250, "h1,h3"),
    ("trickle-1000", trickle_uploads, 15, 400, "h1"),
    ("head-patch", resumable_flood, 10, 200, "h1"),
    ("never-read", never_read, 12, 300, "h1"),
]

# ---------------------------------------------------------------- the well-behaved client


def good_client(url, sha, protos, out, stop):
    import pycurl
    protos = protos.split(",")
    versions = {"h1": pycurl.CURL_HTTP_VERSION_1_1, "h3": pycurl.CURL_HTTP_VERSION_3ONLY}
    want = {"h1": pycurl.CURL_HTTP_VERSION_1_1, "h3": pycurl.CURL_HTTP_VERSION_3}
    i = 0
    end = time.monotonic() + 120
    with open(out, "w") as f:
        while not os.path.exists(stop) and time.monotonic() < end:
            proto = protos[i % len(protos)]
            i += 1
            c = pycurl.Curl()
            c.setopt(pycurl.URL, url)
            c.setopt(pycurl.HTTP_VERSION, versions[proto])
            c.setopt(pycurl.SSL_VERIFYPEER, 0)
            c.setopt(pycurl.SSL_VERIFYHOST, 0)
            c.setopt(pycurl.TIMEOUT, 5)
            c.setopt(pycurl.NOSIGNAL, 1)
            c.setopt(pycurl.FORBID_REUSE, 1)
            h = hashlib.sha256()
            c.setopt(pycurl.WRITEFUNCTION, h.update)
            t0 = time.monotonic()
            err = None
            try:
                c.perform()
            except pycurl.error as e:
                err = str(e)
            dt = time.monotonic() - t0
            status = c.getinfo(pycurl.RESPONSE_CODE)
            ver = c.getinfo(pycurl.INFO_HTTP_VERSION)
            c.close()
            ok = err is None and status == 200 and h.hexdigest() == sha and ver == want[proto]
            f.write(json.dumps({"proto": proto, "s": round(dt, 4), "status": status, "ok": ok, "err": err,
                                "at": round(t0, 3)}) + "\n")
            f.flush()
            time.sleep(max(0, 0.2 - dt))


# ---------------------------------------------------------------- the orchestrator


def free_port():
    for _ in range(100):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        return port
    raise RuntimeError("no free port")


def rss_kb(pid, key="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def plain_request(method, url, body=None, proto="h1", timeout=10):
    import pycurl
    import io
    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1 if proto == "h1" else pycurl.CURL_HTTP_VERSION_3ONLY)
    c.setopt(pycurl.SSL_VERIFYPEER, 0)
    c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.TIMEOUT, timeout)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.HTTPHEADER, ["Expect:"])
    if body is not None:
        c.setopt(pycurl.UPLOAD, 1)
        c.setopt(pycurl.READDATA, io.BytesIO(body))
        c.setopt(pycurl.INFILESIZE_LARGE, len(body))
    c.setopt(pycurl.WRITEFUNCTION, lambda b: None)
    try:
        c.perform()
        return c.getinfo(pycurl.RESPONSE_CODE)
    except pycurl.error:
        return 0
    finally:
        c.close()


def start_server(xferd, work):
    port = free_port()
    secret = "hostile-%d" % random.randrange(1 << 40)
    os.makedirs(work + "/data")
    os.makedirs(work + "/state")
    conf = work + "/xferd.toml"
    with open(conf, "w") as f:
        f.write("""[server]
listen = "127.0.0.1:%d"
storage_path = "%s/data"
state_path = "%s/state"
max_upload_size = "64MB"
max_connections = %d
header_read_timeout = "%ds"

[security]
secret = "%s"

[downloads]
require_signature = true
""" % (port, work, work, MAX_CONNECTIONS, HEADER_READ_TIMEOUT, secret))
    log = open(work + "/xferd.log", "wb")
    proc = subprocess.Popen([xferd, "serve", "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    base = "https://127.0.0.1:%d" % port
    for _ in range(150):
        if proc.poll() is not None:
            break
        if plain_request("GET", base + "/health", timeout=2) == 200:
            return proc, port, secret, base
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError("xferd did not become healthy (log: %s/xferd.log)" % work)


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p * (len(v) - 1))))]


def run_case(xferd, root, name, attack, secs, bound_mb, protos):
    work = tempfile.mkdtemp(prefix=name + ".", dir=root)
    result = {"case": name, "bound_mb": bound_mb, "fails": []}
    proc, port, secret, base = start_server(xferd, work)
    good = None
    stop = work + "/good.stop"
    try:
        small = os.urandom(SMALL)
        big = os.urandom(BIG)
        for path, data in (("hostile/small.bin", small), ("hostile/big.bin", big)):
            st = plain_request("PUT", sign(secret, base, "PUT", path), data, timeout=60)
            if st != 201:
                raise RuntimeError("setup PUT %s -> %s" % (path, st))
        env = {"port": port, "secret": secret, "base": base,
               "small_url": sign(secret, base, "GET", "hostile/small.bin"),
               "big_url": sign(secret, base, "GET", "hostile/big.bin")}
        sha = hashlib.sha256(small).hexdigest()
        del big
        good_out = work + "/good.jsonl"
        good = subprocess.Popen([sys.executable, os.path.abspath(__file__), "good", env["small_url"], sha,
                                 protos, good_out, stop])
        peak = [rss_kb(proc.pid)]

        async def main():
            async def sample():
                while True:
                    peak[0] = max(peak[0], rss_kb(proc.pid))
                    await asyncio.sleep(0.1)
            s = asyncio.ensure_future(sample())
            try:
                return await asyncio.wait_for(attack(env, secs), secs + 30)
            finally:
                s.cancel()
        time.sleep(0.5)  # the good client's first answers come before the attack
        load, stats, fails = asyncio.run(main())
        time.sleep(1)  # and it goes on a little after
        open(stop, "w").close()
        good.wait(15)
        result["fails"] += fails
        result["load"] = load
        result["stats"] = stats
        hwm = rss_kb(proc.pid, "VmHWM")
        result["peak_mb"] = max(hwm, peak[0]) / 1024
        if result["peak_mb"] > bound_mb:
            result["fails"].append("peak RSS %.0f MiB over the bound %d MiB" % (result["peak_mb"], bound_mb))
        samples = [json.loads(x) for x in open(good_out)]
        lat = [s["s"] for s in samples]
        result["good_n"] = len(samples)
        result["p50"] = pct(lat, 0.5)
        result["max"] = max(lat) if lat else float("nan")
        bad = [s for s in samples if not s["ok"] or s["s"] > 1.0]
        if bad:
            result["fails"].append("%d of %d good-client requests wrong or slower than 1 s, e.g. %s"
                                   % (len(bad), len(samples), bad[:3]))
        for p in protos.split(","):
            if not any(s["proto"] == p and s["ok"] for s in samples):
                result["fails"].append("no good %s answer at all" % p)
        if plain_request("GET", base + "/health", timeout=5) != 200:
            result["fails"].append("GET /health not 200 after the attack")
        if proc.poll() is not None:
            result["fails"].append("xferd exited (status %s)" % proc.returncode)
    except Exception as e:
        result["fails"].append("harness error: %r" % e)
    finally:
        if good is not None and good.poll() is None:
            good.kill()
            good.wait()
        stop_server(proc)
        log = open(work + "/xferd.log", "rb").read()
        if b"panicked" in log:
            line = [x for x in log.split(b"\n") if b"panicked" in x][0]
            result["fails"].append("server log: %s" % line.decode("utf-8", "replace")[:200])
        result["log"] = work + "/xferd.log"
    return result


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "good":
        good_client(*sys.argv[2:7])
        return 0
    if len(sys.argv) < 3 or sys.argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 64
    xferd = os.path.abspath(sys.argv[2])
    only = None
    keep = "--keep" in sys.argv
    if "--only" in sys.argv:
        only = sys.argv[sys.argv.index("--only") + 1].split(",")
    root = tempfile.mkdtemp(prefix="xferd-hostile.")
    results = []
    t_all = time.monotonic()
    for name, attack, secs, bound, protos in CASES:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        r = run_case(xferd, root, name, attack, secs, bound, protos)
        r["took"] = time.monotonic() - t0
        results.append(r)
        verdict = "PASS" if not r["fails"] else "FAIL"
        print("%s %s (%.0f s): %s" % (verdict, name, r["took"], r.get("load", "")), flush=True)
        print("    stats: %s" % json.dumps(r.get("stats", {}), sort_keys=True, default=str), flush=True)
        for f in r["fails"]:
            print("    - %s" % f, flush=True)
    print()
    print("| case | load | RSS bound | peak RSS | good client p50 / max (n) | outcome |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print("| %s | %s | %d MiB | %.0f MiB | %.0f / %.0f ms (%d) | %s |" % (
            r["case"], r.get("load", "?"), r["bound_mb"], r.get("peak_mb", 0), 1000 * r.get("p50", 0),
            1000 * r.get("max", 0), r.get("good_n", 0), "pass" if not r["fails"] else "FAIL"))
    failed = [r["case"] for r in results if r["fails"]]
    print()
    print("hostile: %d cases, %d passed, %d failed%s (%.0f s)" % (
        len(results), len(results) - len(failed), len(failed),
        (": " + ", ".join(failed)) if failed else "", time.monotonic() - t_all))
    if not keep and not failed:
        subprocess.run(["rm", "-rf", root])
    else:
        print("logs kept in %s" % root)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
