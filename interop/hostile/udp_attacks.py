"""The UDP/QUIC attacks of the hostile-load suite (see hostile.py): random datagrams, and
QUIC Initials (undecryptable ones, and real first flights captured from libcurl and replayed
from fresh ports, each a handshake the server starts and that never completes)."""
import asyncio
import os
import random
import socket
import struct
import time

from wire import ATTACKER


def server_socket_drops(port):
    """Datagrams the kernel dropped because the server's UDP socket on `port` was full (the
    last column of /proc/net/udp): how far the server fell behind draining it. Reported in
    the stats; a good client's Initial lost this way waits out its 1 s retransmission."""
    want = ":%04X" % port
    try:
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].endswith(want) and cols[2] == "00000000:0000":
                    return int(cols[-1])
    except OSError:
        pass
    return None


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
    stats["server_socket_drops"] = server_socket_drops(env["port"])
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
        if time.monotonic() >= deadline - 1:  # a capture takes about half a second
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
    stats["server_socket_drops"] = server_socket_drops(env["port"])
    for s in held:
        s.close()
    return "%d half-open QUIC handshakes + %d junk Initials, %ds" % (
        stats["handshakes"], stats.get("fake_initials", 0), secs), stats, []

