"""Shared pieces of the hostile-load suite: v3 signing, HTTP/2 frames and HPACK written by
hand, TLS/TCP connections from the attacker's address, an HTTP/1.1 response reader, counters."""
import asyncio
import hashlib
import hmac
import socket
import ssl
import struct
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


async def until(deadline, coros):
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, timeout=max(0, deadline - time.monotonic()))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

