#!/usr/bin/env python3
"""Small HTTP/3 client on pycurl (the PyPI wheel bundles libcurl with ngtcp2).

Used by interop/http/run.sh (conformance) and benches/transfer.sh (throughput).
It is a third-party client for xferd's purposes: all protocol work is libcurl's.

    h3_client.py put  URL FILE [--content-type T]
    h3_client.py get  URL [--range A-B] [--out FILE] [--sha256]
    h3_client.py head URL
    h3_client.py --resume N head URL   (the request again on N fresh connections, each
                                        resuming the TLS session with 0-RTT early data)

Prints one JSON object per request on stdout:
    {"method", "url", "status", "http_version", "bytes", "seconds", "mb_per_s",
     "sha256" (GET with --sha256), "headers" (lower-case names), "error" (on failure),
     "early_data" (request bytes sent in 0-RTT early data)}

Exit status: 0 when the request completed over the HTTP version asked for (HTTP/3 by
default) and, with --expect-status, got that status; 2 when the version or status was
wrong; 1 on a transport error (connect, TLS, QUIC, timeout).
"""
import argparse
import hashlib
import json
import os
import sys
import time

import pycurl

VERSIONS = {
    "3": (pycurl.CURL_HTTP_VERSION_3ONLY, pycurl.CURL_HTTP_VERSION_3),
    "2": (pycurl.CURL_HTTP_VERSION_2_0, pycurl.CURL_HTTP_VERSION_2_0),
    "1.1": (pycurl.CURL_HTTP_VERSION_1_1, pycurl.CURL_HTTP_VERSION_1_1),
}
VERSION_NAMES = {
    pycurl.CURL_HTTP_VERSION_1_0: "1.0",
    pycurl.CURL_HTTP_VERSION_1_1: "1.1",
    pycurl.CURL_HTTP_VERSION_2_0: "2",
    pycurl.CURL_HTTP_VERSION_3: "3",
}


class Headers:
    """Collects the header block of the last (final) response."""

    def __init__(self):
        self.status_line = ""
        self.fields = {}

    def __call__(self, raw):
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line.startswith("HTTP/"):
            # A new response (1xx informational responses come before the final one).
            self.status_line = line
            self.fields = {}
        elif ":" in line:
            name, value = line.split(":", 1)
            name = name.strip().lower()
            value = value.strip()
            if name in self.fields:
                self.fields[name] += ", " + value
            else:
                self.fields[name] = value


def build(args, url, share=None):
    c = pycurl.Curl()
    if share is not None:
        # Resume the TLS session of an earlier connection and send the request in early data.
        c.setopt(pycurl.SHARE, share)
        c.setopt(pycurl.SSL_OPTIONS, pycurl.SSLOPT_EARLYDATA)
    want, _ = VERSIONS[args.http]
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.HTTP_VERSION, want)
    # Self-signed / internal-CA certificates on loopback.
    c.setopt(pycurl.SSL_VERIFYPEER, 0)
    c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.CONNECTTIMEOUT, args.connect_timeout)
    c.setopt(pycurl.TIMEOUT, args.timeout)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.BUFFERSIZE, 512 * 1024)
    c.setopt(pycurl.USERAGENT, "xferd-interop-h3-client/1 (pycurl %s)" % pycurl.version.split()[0])
    c.setopt(pycurl.HTTPHEADER, ["Expect:"] + list(args.header or []))
    return c


def run(args, share=None):
    result = {"method": args.cmd.upper(), "url": args.url}
    hdrs = Headers()
    sha = hashlib.sha256() if getattr(args, "sha256", False) else None
    nbytes = [0]
    out = None
    infile = None

    c = build(args, args.url, share)
    c.setopt(pycurl.HEADERFUNCTION, hdrs)

    if args.cmd == "put":
        size = os.path.getsize(args.file)
        infile = open(args.file, "rb")
        c.setopt(pycurl.UPLOAD, 1)
        c.setopt(pycurl.READFUNCTION, infile.read)
        c.setopt(pycurl.INFILESIZE_LARGE, size)
        c.setopt(pycurl.UPLOAD_BUFFERSIZE, 2 * 1024 * 1024)
        if args.content_type:
            c.setopt(pycurl.HTTPHEADER, ["Expect:", "Content-Type: " + args.content_type] + list(args.header or []))
        body = bytearray()

        def sink(chunk):
            if len(body) < 65536:
                body.extend(chunk[: 65536 - len(body)])

        c.setopt(pycurl.WRITEFUNCTION, sink)
    elif args.cmd == "head":
        c.setopt(pycurl.NOBODY, 1)
        body = None
    else:  # get
        if args.range:
            c.setopt(pycurl.RANGE, args.range)
        if args.out:
            out = open(args.out, "wb")

        def sink(chunk):
            nbytes[0] += len(chunk)
            if sha is not None:
                sha.update(chunk)
            if out is not None:
                out.write(chunk)

        c.setopt(pycurl.WRITEFUNCTION, sink)
        body = None

    rc = 0
    t0 = time.monotonic()
    try:
        c.perform()
    except pycurl.error as e:
        result["error"] = "curl error %s: %s" % (e.args[0], e.args[1] if len(e.args) > 1 else "")
        rc = 1
    elapsed = time.monotonic() - t0
    if out is not None:
        out.close()
    if infile is not None:
        infile.close()

    status = c.getinfo(pycurl.RESPONSE_CODE)
    version = c.getinfo(pycurl.INFO_HTTP_VERSION)
    uploaded = c.getinfo(pycurl.SIZE_UPLOAD_T)
    early = c.getinfo(pycurl.EARLYDATA_SENT_T)
    c.close()
    if args.cmd == "put":
        moved = uploaded
        result["response_body"] = bytes(body).decode("utf-8", "replace")
    else:
        moved = nbytes[0]
    result.update(
        {
            "status": status,
            "http_version": VERSION_NAMES.get(version, str(version)),
            "http_version_raw": version,
            "bytes": moved,
            "seconds": round(elapsed, 6),
            "mb_per_s": round(moved / elapsed / 1e6, 2) if elapsed > 0 else None,
            "headers": hdrs.fields,
            "early_data": early,
        }
    )
    if sha is not None:
        result["sha256"] = sha.hexdigest()

    if rc == 0:
        _, expect_version = VERSIONS[args.http]
        if version != expect_version:
            result["error"] = "response came over HTTP version %s (raw %d), not %s" % (
                result["http_version"], version, args.http)
            rc = 2
        elif args.expect_status is not None and status != args.expect_status:
            result["error"] = "status %d, expected %d" % (status, args.expect_status)
            rc = 2
    print(json.dumps(result, sort_keys=True))
    sys.stdout.flush()
    return rc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", choices=sorted(VERSIONS), default="3", help="HTTP version (default 3, HTTP/3 only)")
    p.add_argument("--timeout", type=int, default=120, help="whole-request limit, seconds")
    p.add_argument("--connect-timeout", type=int, default=10)
    p.add_argument("--expect-status", type=int)
    p.add_argument("--resume", type=int, default=0,
                   help="repeat the request on this many fresh connections that resume the first's TLS session (0-RTT)")
    p.add_argument("-H", "--header", action="append", help="extra request header")
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("put")
    sp.add_argument("url")
    sp.add_argument("file")
    sp.add_argument("--content-type")
    sg = sub.add_parser("get")
    sg.add_argument("url")
    sg.add_argument("--range", help="byte range, e.g. 100-199")
    sg.add_argument("--out", help="write the body here")
    sg.add_argument("--sha256", action="store_true", help="hash the body while receiving")
    sh = sub.add_parser("head")
    sh.add_argument("url")
    args = p.parse_args()
    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3 and args.http == "3":
        print(json.dumps({"error": "this libcurl has no HTTP/3: %s" % pycurl.version}))
        return 1
    if args.resume:
        share = pycurl.CurlShare()
        share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
        return max(run(args, share) for _ in range(args.resume + 1))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
