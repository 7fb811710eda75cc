#!/usr/bin/env python3
"""Resumable-upload conformance flows driven through libcurl (pycurl), for
interop/resumable/run.sh. libcurl does all of the HTTP work (HTTP/1.1, HTTP/2, HTTP/3 via
ngtcp2); the one exception is the interrupted append over HTTP/1.1, which opens a TLS
socket itself, sends the headers and half the body, and closes it.

    pycurl_resumable.py ietf URL FILE --http 1.1|2|3 [--cacert PEM] [--label L]
        [--put-url URL2] [--delete-url URL3]
    pycurl_resumable.py tus  URL FILE --http 1.1|2|3 [--cacert PEM] [--label L]
        [--details --concat-url URL2 --delete-url URL3 --checksum-url URL4]

URL is a signed upload URL (the target path); the flows check the stored file by GET on
URL without its query. "ietf" runs the IETF draft flow (interop version 6): creation with
Upload-Complete: ?0 and part of the body, an append interrupted mid-body, HEAD for the
offset, a PATCH at a wrong offset (409 + problem details), the final PATCH with
Upload-Complete: ?1, GET and SHA-256; --put-url adds a one-shot PUT with Upload-Complete:
?1; --delete-url a create + DELETE. "tus" runs tus 1.0 (create, PATCH, HEAD, PATCH, GET)
and with --details more of the protocol (OPTIONS, checksums, 409/412/415, concatenation,
DELETE).

Prints "PASS name" / "FAIL name: reason" lines (evidence indented under a FAIL) and exits
0 when every check passed.
"""
import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse as up

import pycurl

VERSIONS = {"1.1": pycurl.CURL_HTTP_VERSION_1_1, "2": pycurl.CURL_HTTP_VERSION_2_0,
            "3": pycurl.CURL_HTTP_VERSION_3ONLY}
GOT = {pycurl.CURL_HTTP_VERSION_1_0: "1.0", pycurl.CURL_HTTP_VERSION_1_1: "1.1",
       pycurl.CURL_HTTP_VERSION_2_0: "2", pycurl.CURL_HTTP_VERSION_3: "3"}
IETF = "6"
results = {"passed": 0, "failed": 0}


def check(ok, name, reason="", evidence=None):
    if ok:
        results["passed"] += 1
        print("PASS " + name, flush=True)
    else:
        results["failed"] += 1
        print("FAIL %s: %s" % (name, reason), flush=True)
        for r in evidence or []:
            for line in describe(r).splitlines()[:30]:
                print("    | " + line)
    return ok


class Resp:
    def __init__(self):
        self.status = None
        self.version = None
        self.headers = {}
        self.informational = []  # [(status, {headers})]
        self.body = b""
        self.error = None
        self.request = ""
        self.sent = 0

    def h(self, name):
        return self.headers.get(name.lower())


def describe(r):
    if not isinstance(r, Resp):
        return str(r)
    out = ["request: " + r.request]
    for st, hs in r.informational:
        out.append("informational %s: %s" % (st, "; ".join("%s: %s" % kv for kv in hs.items())))
    out.append("response: %s over HTTP/%s%s" % (r.status, r.version,
                                                 (" (curl error: %s)" % r.error) if r.error else ""))
    out += ["%s: %s" % kv for kv in sorted(r.headers.items())]
    if r.body:
        out.append("body: " + r.body[:400].decode("utf-8", "replace"))
    return "\n".join(out)


# Over HTTP/3 every fresh handle resumes the TLS session of the one before (one share
# handle) and sends its request in 0-RTT early data, as a returning mobile client would:
# POSTs, PATCHes and DELETEs included (xferd holds them until the handshake completes).
SHARE = pycurl.CurlShare()
SHARE.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
EARLY = {"requests": 0, "early": 0}


def request(args, method, url, headers=(), body=None, abort_after=None, sink=None):
    """One request on a fresh libcurl handle. body: bytes or None. abort_after: stop the
    upload (READFUNC_ABORT) once that many body bytes were handed to libcurl."""
    r = Resp()
    r.request = "%s %s %s%s" % (method, url, " | ".join(headers),
                                "" if body is None else " | body %d bytes%s" % (
                                    len(body), "" if abort_after is None else
                                    ", aborted after %d" % abort_after))
    c = pycurl.Curl()
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, VERSIONS[args.http])
    if args.http == "3":
        c.setopt(pycurl.SHARE, SHARE)
        c.setopt(pycurl.SSL_OPTIONS, pycurl.SSLOPT_EARLYDATA)
    if args.cacert:
        c.setopt(pycurl.CAINFO, args.cacert)
    else:
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.CONNECTTIMEOUT, 10)
    c.setopt(pycurl.TIMEOUT, 120)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.HTTPHEADER, ["Expect:"] + list(headers))

    cur = {"status": None, "headers": {}}

    def on_header(raw):
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            if cur["status"] is not None and 100 <= cur["status"] < 200:
                r.informational.append((cur["status"], cur["headers"]))
            parts = line.split(" ", 2)
            cur["status"] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            cur["headers"] = {}
        elif ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            v = v.strip()
            cur["headers"][k] = cur["headers"][k] + ", " + v if k in cur["headers"] else v

    c.setopt(pycurl.HEADERFUNCTION, on_header)
    buf = bytearray()
    if sink is None:
        def sink(chunk):
            if len(buf) < 1 << 20:
                buf.extend(chunk)
    c.setopt(pycurl.WRITEFUNCTION, sink)

    if method == "HEAD":
        c.setopt(pycurl.NOBODY, 1)
    elif body is not None:
        pos = [0]

        def reader(n):
            chunk = body[pos[0]:pos[0] + n]
            pos[0] += len(chunk)
            return chunk

        c.setopt(pycurl.UPLOAD, 1)
        c.setopt(pycurl.READFUNCTION, reader)
        c.setopt(pycurl.INFILESIZE_LARGE, len(body))
        c.setopt(pycurl.CUSTOMREQUEST, method)
        if abort_after is not None:
            # Abort once libcurl reports that many body bytes sent: the request is cut
            # mid-body (HTTP/2 RST_STREAM, HTTP/3 stream reset).
            def progress(_dt, _dn, _ut, un):
                r.sent = un
                return 1 if un >= abort_after else 0
            c.setopt(pycurl.NOPROGRESS, 0)
            c.setopt(pycurl.XFERINFOFUNCTION, progress)
    elif method != "GET":
        c.setopt(pycurl.CUSTOMREQUEST, method)
    try:
        c.perform()
    except pycurl.error as e:
        r.error = "%s %s" % (e.args[0], e.args[1] if len(e.args) > 1 else "")
    code = c.getinfo(pycurl.RESPONSE_CODE)
    if args.http == "3":
        EARLY["requests"] += 1
        EARLY["early"] += c.getinfo(pycurl.EARLYDATA_SENT_T) > 0
    r.status = code if code else None
    r.version = GOT.get(c.getinfo(pycurl.INFO_HTTP_VERSION), "?")
    r.headers = cur["headers"]
    r.body = bytes(buf)
    c.close()
    return r


def raw_interrupted(args, url, headers, body, send):
    """HTTP/1.1 over TLS by hand: headers + the first `send` body bytes, then close."""
    u = up.urlsplit(url)
    ctx = ssl.create_default_context(cafile=args.cacert) if args.cacert else ssl._create_unverified_context()
    ctx.set_alpn_protocols(["http/1.1"])
    s = socket.create_connection((u.hostname, u.port or 443), timeout=10)
    t = ctx.wrap_socket(s, server_hostname=u.hostname)
    target = u.path + ("?" + u.query if u.query else "")
    head = "PATCH %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n" % (
        target, u.netloc, "".join(h + "\r\n" for h in headers), len(body))
    t.sendall(head.encode() + body[:send])
    time.sleep(0.3)  # let the server read what was sent before the connection drops
    try:
        t.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    t.close()
    r = Resp()
    r.request = "PATCH %s (raw TLS socket, HTTP/1.1) %s | Content-Length %d, sent %d then closed" % (
        url, " | ".join(headers), len(body), send)
    r.sent = send
    return r


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def get_sha(args, url):
    h = hashlib.sha256()
    n = [0]

    def sink(chunk):
        h.update(chunk)
        n[0] += len(chunk)
    r = request(args, "GET", url, sink=sink)
    return r, h.hexdigest(), n[0]


def strip_query(url):
    u = up.urlsplit(url)
    return up.urlunsplit((u.scheme, u.netloc, u.path, "", ""))


def version_ok(args, r):
    return r.version == args.http


def int_or_none(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- IETF draft
def ietf(args):
    L = args.label
    data = open(args.file, "rb").read()
    size = len(data)
    want = sha256(data)
    ih = ["Upload-Draft-Interop-Version: " + IETF]
    part1 = size // 5

    # 1. creation with part of the content, Upload-Complete: ?0
    r = request(args, "POST", args.url, ih + ["Upload-Complete: ?0",
                                              "Content-Type: application/octet-stream"], data[:part1])
    loc = r.h("location")
    if not check(r.status == 201 and loc is not None and version_ok(args, r),
                 "%s IETF creation POST Upload-Complete: ?0 -> 201 + Location" % L,
                 "status %s over HTTP/%s, Location %r" % (r.status, r.version, loc), [r]):
        return
    res = up.urljoin(args.url, loc)
    check(up.urlsplit(res).path.startswith("/resumable/"),
          "%s IETF Location is /resumable/<id>" % L, "Location %r" % loc, [r])
    info104 = [st for st, hs in r.informational if st == 104]
    if info104:
        hs = [hs for st, hs in r.informational if st == 104][0]
        check(hs.get("location") == loc, "%s IETF 104 Upload Resumption Supported carries the Location" % L,
              "104 Location %r, final Location %r" % (hs.get("location"), loc), [r])
    else:
        print("# note: %s creation got no 104 informational response (informational: %s)" % (
            L, [st for st, _ in r.informational]))
    off = int_or_none(r.h("upload-offset"))
    if off is not None:
        check(off == part1, "%s IETF creation reports Upload-Offset %d" % (L, part1), "got %s" % off, [r])

    # 2. HEAD -> 204, Upload-Offset = part1, Upload-Complete: ?0
    r = request(args, "HEAD", res, ih)
    off = int_or_none(r.h("upload-offset"))
    check(r.status == 204 and off == part1 and r.h("upload-complete") == "?0"
          and "no-store" in (r.h("cache-control") or ""),
          "%s IETF HEAD -> 204, Upload-Offset %d, Upload-Complete ?0, Cache-Control no-store" % (L, part1),
          "status %s, Upload-Offset %s, Upload-Complete %s, Cache-Control %s" % (
              r.status, off, r.h("upload-complete"), r.h("cache-control")), [r])
    if off is None:
        off = part1

    # 3. an append interrupted mid-body
    rest = data[off:]
    half = len(rest) // 2
    ph = ih + ["Content-Type: application/partial-upload", "Upload-Offset: %d" % off, "Upload-Complete: ?1"]
    if args.http == "1.1":
        ri = raw_interrupted(args, res, ph, rest, half)
    else:
        ri = request(args, "PATCH", res, ph, rest, abort_after=half)
    time.sleep(0.5)
    sent = ri.sent or half
    r = request(args, "HEAD", res, ih)
    got = int_or_none(r.h("upload-offset"))
    check(r.status == 204 and got is not None and off <= got <= off + sent and r.h("upload-complete") == "?0",
          "%s IETF after an append cut mid-body (%d bytes sent) HEAD -> 204, offset in [%d, %d], Upload-Complete ?0" % (
              L, sent, off, off + sent),
          "status %s, Upload-Offset %s, Upload-Complete %s" % (r.status, got, r.h("upload-complete")), [ri, r])
    check(got is not None and got > off,
          "%s IETF bytes received before the interruption were kept" % L,
          "offset %s after sending %d bytes from %d" % (got, sent, off), [ri, r])
    if got is None:
        got = off

    # 4. PATCH at a wrong offset -> 409 + problem details with the right offset
    bad = got + 7
    r = request(args, "PATCH", res, ih + ["Content-Type: application/partial-upload",
                                          "Upload-Offset: %d" % bad, "Upload-Complete: ?0"],
                data[bad:bad + 1000])
    problem = None
    try:
        problem = json.loads(r.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        pass
    ctype = (r.h("content-type") or "").split(";")[0].strip()
    reported = None
    if isinstance(problem, dict):
        reported = problem.get("expected-offset", None)
    hdr_off = int_or_none(r.h("upload-offset"))
    check(r.status == 409 and ctype == "application/problem+json" and isinstance(problem, dict)
          and "mismatching-upload-offset" in str(problem.get("type", ""))
          and (reported == got or hdr_off == got),
          "%s IETF PATCH at a wrong offset -> 409 problem+json mismatching-upload-offset, right offset %d" % (L, got),
          "status %s, Content-Type %r, expected-offset %r, Upload-Offset header %r" % (
              r.status, ctype, reported, hdr_off), [r])
    if isinstance(problem, dict) and "provided-offset" in problem:
        check(problem.get("provided-offset") == bad, "%s IETF problem details provided-offset %d" % (L, bad),
              "provided-offset %r" % problem.get("provided-offset"), [r])

    # 5. the rest with Upload-Complete: ?1
    r = request(args, "PATCH", res, ih + ["Content-Type: application/partial-upload",
                                          "Upload-Offset: %d" % got, "Upload-Complete: ?1"], data[got:])
    check(r.status in (200, 201, 204) and version_ok(args, r),
          "%s IETF final PATCH Upload-Complete: ?1 -> 2xx" % L,
          "status %s over HTTP/%s" % (r.status, r.version), [r])
    g, digest, n = get_sha(args, strip_query(args.url))
    check(g.status == 200 and digest == want and version_ok(args, g),
          "%s IETF GET target path -> 200, SHA-256 matches" % L,
          "status %s over HTTP/%s, %d bytes, sha256 %s want %s" % (g.status, g.version, n, digest, want), [g])

    # 6. one-shot PUT with Upload-Complete: ?1 and all of the content
    if args.put_url:
        r = request(args, "PUT", args.put_url, ih + ["Upload-Complete: ?1"], data)
        check(r.status == 201, "%s IETF PUT Upload-Complete: ?1 with all the content -> 201" % L,
              "status %s" % r.status, [r])
        g, digest, n = get_sha(args, strip_query(args.put_url))
        check(g.status == 200 and digest == want, "%s IETF one-shot upload GET -> SHA-256 matches" % L,
              "status %s, %d bytes, sha256 %s" % (g.status, n, digest), [g])

    # 7. DELETE cancels
    if args.delete_url:
        r = request(args, "POST", args.delete_url, ih + ["Upload-Complete: ?0"], data[:4096])
        loc = r.h("location")
        if check(r.status == 201 and loc, "%s IETF creation for DELETE -> 201" % L, "status %s" % r.status, [r]):
            res2 = up.urljoin(args.delete_url, loc)
            d = request(args, "DELETE", res2, ih)
            check(d.status == 204, "%s IETF DELETE -> 204" % L, "status %s" % d.status, [d])
            h = request(args, "HEAD", res2, ih)
            check(h.status in (404, 410), "%s IETF HEAD after DELETE -> 404/410" % L, "status %s" % h.status, [h])
            g = request(args, "GET", strip_query(args.delete_url))
            check(g.status == 404, "%s IETF nothing stored at the target after DELETE (GET -> 404)" % L,
                  "status %s" % g.status, [g])


# ----------------------------------------------------------------------------- tus 1.0
TH = ["Tus-Resumable: 1.0.0"]
OCT = "Content-Type: application/offset+octet-stream"


def b64(b):
    return base64.b64encode(b).decode()


def tus_create(args, url, length, extra=()):
    r = request(args, "POST", url, TH + ["Upload-Length: %d" % length] + list(extra), b"")
    loc = r.h("location")
    return r, (up.urljoin(url, loc) if loc else None)


def tus(args):
    L = args.label
    data = open(args.file, "rb").read()
    size = len(data)
    want = sha256(data)
    half = size // 2

    r, res = tus_create(args, args.url, size, ["Upload-Metadata: filename %s" % b64(b"h3 test.bin")])
    if not check(r.status == 201 and res and version_ok(args, r) and r.h("tus-resumable") == "1.0.0",
                 "%s tus POST creation -> 201 + Location, Tus-Resumable 1.0.0 (HTTP/%s)" % (L, args.http),
                 "status %s over HTTP/%s, Location %r, Tus-Resumable %r" % (
                     r.status, r.version, r.h("location"), r.h("tus-resumable")), [r]):
        return
    check(up.urlsplit(res).path.startswith("/files/"), "%s tus Location is /files/<id>" % L,
          "Location %r" % r.h("location"), [r])
    p = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: 0"], data[:half])
    check(p.status == 204 and int_or_none(p.h("upload-offset")) == half and version_ok(args, p),
          "%s tus PATCH first half -> 204, Upload-Offset %d (HTTP/%s)" % (L, half, args.http),
          "status %s over HTTP/%s, Upload-Offset %s" % (p.status, p.version, p.h("upload-offset")), [p])
    h = request(args, "HEAD", res, TH)
    check(h.status in (200, 204) and int_or_none(h.h("upload-offset")) == half
          and int_or_none(h.h("upload-length")) == size and "no-store" in (h.h("cache-control") or ""),
          "%s tus HEAD -> Upload-Offset %d, Upload-Length %d, Cache-Control no-store" % (L, half, size),
          "status %s, Upload-Offset %s, Upload-Length %s, Cache-Control %s" % (
              h.status, h.h("upload-offset"), h.h("upload-length"), h.h("cache-control")), [h])
    check("filename %s" % b64(b"h3 test.bin") in (h.h("upload-metadata") or ""),
          "%s tus HEAD returns the Upload-Metadata" % L, "Upload-Metadata %r" % h.h("upload-metadata"), [h])
    # A PATCH cut mid-body: what arrived before the interruption is kept (tus core).
    rest = data[half:]
    ph = TH + [OCT, "Upload-Offset: %d" % half]
    if args.http == "1.1":
        ri = raw_interrupted(args, res, ph, rest, len(rest) // 2)
    else:
        ri = request(args, "PATCH", res, ph, rest, abort_after=len(rest) // 2)
    time.sleep(0.5)
    sent = ri.sent or len(rest) // 2
    h = request(args, "HEAD", res, TH)
    got = int_or_none(h.h("upload-offset"))
    check(got is not None and half <= got <= half + sent,
          "%s tus after a PATCH cut mid-body (%d bytes sent) HEAD -> offset in [%d, %d]" % (L, sent, half, half + sent),
          "status %s, Upload-Offset %s" % (h.status, got), [ri, h])
    check(got is not None and got > half, "%s tus bytes received before the interruption were kept" % L,
          "offset %s after sending %d bytes from %d" % (got, sent, half), [ri, h])
    if got is None or not half <= got <= size:
        got = half
    p = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: %d" % got], data[got:])
    check(p.status == 204 and int_or_none(p.h("upload-offset")) == size and version_ok(args, p),
          "%s tus PATCH the rest from the HEAD offset -> 204, Upload-Offset %d" % (L, size),
          "status %s over HTTP/%s, Upload-Offset %s" % (p.status, p.version, p.h("upload-offset")), [p])
    g, digest, n = get_sha(args, strip_query(args.url))
    check(g.status == 200 and digest == want and version_ok(args, g),
          "%s tus GET target path -> 200, SHA-256 matches (HTTP/%s)" % (L, args.http),
          "status %s over HTTP/%s, %d bytes, sha256 %s want %s" % (g.status, g.version, n, digest, want), [g])
    if args.details:
        tus_details(args, data)


def tus_details(args, data):
    L = args.label
    base = up.urlunsplit(up.urlsplit(args.url)[:2] + ("/files/", "", ""))

    o = request(args, "OPTIONS", base)
    ext = [e.strip() for e in (o.h("tus-extension") or "").split(",")]
    need = ["creation", "creation-with-upload", "creation-defer-length", "expiration", "checksum",
            "termination", "concatenation"]
    missing = [e for e in need if e not in ext]
    check(o.status in (200, 204) and "1.0.0" in (o.h("tus-version") or "") and not missing
          and o.h("tus-max-size") and "sha1" in (o.h("tus-checksum-algorithm") or ""),
          "%s tus OPTIONS /files/ -> Tus-Version 1.0.0, extensions, Tus-Max-Size, sha1" % L,
          "status %s, Tus-Version %r, missing extensions %s, Tus-Max-Size %r, Tus-Checksum-Algorithm %r" % (
              o.status, o.h("tus-version"), missing, o.h("tus-max-size"), o.h("tus-checksum-algorithm")), [o])

    # Everything below works on the checksum URL's upload (never completed, then deleted).
    url = args.checksum_url
    n = 8 * 65536
    r, res = tus_create(args, url, n)
    if not check(r.status == 201 and res, "%s tus creation for protocol details -> 201" % L,
                 "status %s" % r.status, [r]):
        return
    chunk = data[:65536]
    r = request(args, "PATCH", res, ["Tus-Resumable: 0.2.0", OCT, "Upload-Offset: 0"], chunk)
    check(r.status == 412 and "1.0.0" in (r.h("tus-version") or ""),
          "%s tus unsupported Tus-Resumable 0.2.0 -> 412 with Tus-Version" % L,
          "status %s, Tus-Version %r" % (r.status, r.h("tus-version")), [r])
    r = request(args, "PATCH", res, TH + ["Content-Type: application/octet-stream", "Upload-Offset: 0"], chunk)
    check(r.status == 415, "%s tus PATCH with the wrong Content-Type -> 415" % L, "status %s" % r.status, [r])
    r = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: 5"], chunk)
    check(r.status == 409, "%s tus PATCH at a wrong Upload-Offset -> 409" % L, "status %s" % r.status, [r])
    for algo, fn in (("sha1", hashlib.sha1), ("sha256", hashlib.sha256), ("md5", hashlib.md5)):
        h = request(args, "HEAD", res, TH)
        off = int_or_none(h.h("upload-offset")) or 0
        chunk = data[off:off + 65536]
        r = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: %d" % off,
                                              "Upload-Checksum: %s %s" % (algo, b64(fn(chunk).digest()))], chunk)
        check(r.status == 204 and int_or_none(r.h("upload-offset")) == off + len(chunk),
              "%s tus PATCH with a correct Upload-Checksum %s -> 204" % (L, algo),
              "status %s, Upload-Offset %s" % (r.status, r.h("upload-offset")), [r])
        if algo == "sha1":
            off2 = off + len(chunk)
            chunk2 = data[off2:off2 + 65536]
            r = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: %d" % off2,
                                                  "Upload-Checksum: sha1 %s" % b64(hashlib.sha1(b"x").digest())],
                        chunk2)
            h = request(args, "HEAD", res, TH)
            check(r.status == 460 and int_or_none(h.h("upload-offset")) == off2,
                  "%s tus PATCH with a wrong sha1 checksum -> 460, chunk discarded" % L,
                  "status %s, offset after %s (want %d)" % (r.status, h.h("upload-offset"), off2), [r, h])
            r = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: %d" % off2,
                                                  "Upload-Checksum: crc99 AAAA"], chunk2)
            check(r.status == 400, "%s tus PATCH with an unknown checksum algorithm -> 400" % L,
                  "status %s" % r.status, [r])
            if r.status == 204:  # it took the chunk anyway: keep going from where it is
                pass
    d = request(args, "DELETE", res, TH)
    check(d.status == 204, "%s tus DELETE -> 204" % L, "status %s" % d.status, [d])
    h = request(args, "HEAD", res, TH)
    check(h.status in (404, 410), "%s tus HEAD after DELETE -> 404/410" % L, "status %s" % h.status, [h])

    # creation-with-upload + creation-defer-length on the delete URL's path
    if args.delete_url:
        body = data[:100000]
        r = request(args, "POST", args.delete_url, TH + ["Upload-Defer-Length: 1", OCT], body)
        loc = r.h("location")
        check(r.status == 201 and loc and int_or_none(r.h("upload-offset")) == len(body),
              "%s tus creation-with-upload + Upload-Defer-Length: 1 -> 201, Upload-Offset %d" % (L, len(body)),
              "status %s, Location %r, Upload-Offset %s" % (r.status, loc, r.h("upload-offset")), [r])
        if loc:
            res = up.urljoin(args.delete_url, loc)
            h = request(args, "HEAD", res, TH)
            check(h.h("upload-defer-length") == "1" and h.h("upload-length") is None,
                  "%s tus HEAD on a deferred-length upload -> Upload-Defer-Length: 1" % L,
                  "Upload-Defer-Length %r, Upload-Length %r" % (h.h("upload-defer-length"), h.h("upload-length")), [h])
            rest = data[len(body):150000]
            p = request(args, "PATCH", res, TH + [OCT, "Upload-Offset: %d" % len(body), "Upload-Length: 150000"],
                        rest)
            check(p.status == 204 and int_or_none(p.h("upload-offset")) == 150000,
                  "%s tus PATCH declaring Upload-Length completes the deferred upload" % L,
                  "status %s, Upload-Offset %s" % (p.status, p.h("upload-offset")), [p])
            g, digest, n = get_sha(args, strip_query(args.delete_url))
            check(g.status == 200 and digest == sha256(data[:150000]),
                  "%s tus deferred-length upload GET -> SHA-256 matches" % L,
                  "status %s, %d bytes" % (g.status, n), [g])

    # concatenation by hand: two partials, then the final
    if args.concat_url:
        a, b = data[:300000], data[300000:700000]
        ra, ua = tus_create(args, args.concat_url, len(a), ["Upload-Concat: partial"])
        rb, ub = tus_create(args, args.concat_url, len(b), ["Upload-Concat: partial"])
        if check(ra.status == 201 and rb.status == 201 and ua and ub,
                 "%s tus two Upload-Concat: partial creations -> 201" % L,
                 "statuses %s %s" % (ra.status, rb.status), [ra, rb]):
            # the second partial first: order of arrival must not matter
            pb = request(args, "PATCH", ub, TH + [OCT, "Upload-Offset: 0"], b)
            pa = request(args, "PATCH", ua, TH + [OCT, "Upload-Offset: 0"], a)
            check(pa.status == 204 and pb.status == 204, "%s tus PATCH both partials -> 204" % L,
                  "statuses %s %s" % (pa.status, pb.status), [pa, pb])
            g = request(args, "GET", strip_query(args.concat_url))
            check(g.status == 404, "%s tus a partial upload does not appear at the target (GET -> 404)" % L,
                  "status %s" % g.status, [g])
            fin = "Upload-Concat: final;%s %s" % (up.urlsplit(ua).path, up.urlsplit(ub).path)
            rf = request(args, "POST", args.concat_url, TH + [fin], b"")
            check(rf.status == 201 and rf.h("location"), "%s tus POST %s -> 201" % (L, "Upload-Concat: final;<a> <b>"),
                  "status %s" % rf.status, [rf])
            if rf.h("location"):
                h = request(args, "HEAD", up.urljoin(args.concat_url, rf.h("location")), TH)
                check(h.status in (200, 204, 404, 410) and (h.status >= 400 or (
                    int_or_none(h.h("upload-offset")) == len(a) + len(b) and "final" in (h.h("upload-concat") or ""))),
                      "%s tus HEAD on the final upload -> Upload-Offset %d, Upload-Concat final" % (L, len(a) + len(b)),
                      "status %s, Upload-Offset %s, Upload-Concat %r" % (
                          h.status, h.h("upload-offset"), h.h("upload-concat")), [h])
            g, digest, n = get_sha(args, strip_query(args.concat_url))
            check(g.status == 200 and digest == sha256(a + b),
                  "%s tus concatenated upload GET -> SHA-256 of a+b" % L,
                  "status %s, %d bytes, sha256 %s" % (g.status, n, digest), [g])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("flow", choices=["ietf", "tus"])
    p.add_argument("url")
    p.add_argument("file")
    p.add_argument("--http", choices=sorted(VERSIONS), default="1.1")
    p.add_argument("--cacert")
    p.add_argument("--label", default="")
    p.add_argument("--put-url")
    p.add_argument("--delete-url")
    p.add_argument("--concat-url")
    p.add_argument("--checksum-url")
    p.add_argument("--details", action="store_true")
    args = p.parse_args()
    args.label = args.label or "h" + args.http.split(".")[0]
    if args.http == "3" and not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        check(False, "%s libcurl with HTTP/3" % args.label, pycurl.version)
        return 1
    try:
        (ietf if args.flow == "ietf" else tus)(args)
    except Exception as e:  # noqa: BLE001 - a crash is a failure with its reason
        check(False, "%s %s flow ran to the end" % (args.label, args.flow), "%s: %s" % (type(e).__name__, e))
    if args.http == "3":
        # xferd has 0-RTT on by default: the resumed connections must have used it.
        check(EARLY["early"] > 0,
              "%s %s flow: resumed connections sent their requests in 0-RTT early data (%d of %d)" % (
                  args.label, args.flow, EARLY["early"], EARLY["requests"]),
              "no request went out in early data")
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
