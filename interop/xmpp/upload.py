#!/usr/bin/env python3
"""XEP-0363 interop client for xferd.

Logs in to a real XMPP server (Prosody or ejabberd) with slixmpp, discovers
its HTTP upload services, requests slots, checks that each slot URL carries
the MAC of Prosody's mod_http_upload_external protocol (v1 or v2), PUTs the file to xferd with
the headers the slot asks for, GETs it back and compares SHA-256. Also checks
409 on a second PUT, 403 on tampered URLs and on a size the MAC does not
cover.

Prints one line per case, "PASS <name>" or "FAIL <name>: <reason>", on
stdout. Details of failed HTTP exchanges go to stderr. Exit status is 0 only
if every case passed.

Usage:
  upload.py --jid user@host --password pw --addr 127.0.0.1 --port 5222 \
      --secret SECRET --prefix upload/ --label prosody \
      --service LABEL=JID=SCHEME [--service ...] [--no-http]

SCHEME is "v" (HMAC over "path size") or "v2" (HMAC over
"path\\0size\\0content-type").
"""

import argparse
import asyncio
import hashlib
import hmac
import http.client
import logging
import os
import ssl
import sys
import urllib.parse

import slixmpp

NS_UPLOAD = "urn:xmpp:http:upload:0"

# (file name, declared content type, size in bytes)
FILES = [
    ("My Photo é.jpg", "image/jpeg", 150 * 1024),
    ("Grüße aus Köln.txt", "text/plain", 0),  # size 0: filled with text below
    ("plain.bin", "application/octet-stream", 2 * 1024 * 1024 + 17),
    # OMEMO clients declare application/octet-stream for any name (aesgcm://).
    ("encrypted.jpg", "application/octet-stream", 4096),
]


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name):
        self.passed += 1
        print(f"PASS {name}", flush=True)

    def fail(self, name, reason):
        self.failed += 1
        reason = " ".join(str(reason).split())
        print(f"FAIL {name}: {reason}", flush=True)


def file_content(name, size):
    if name.endswith(".txt"):
        return ("Grüße aus Köln! Schöne Grüße, ça va? 你好\n" * 50).encode("utf-8")
    # deterministic pseudo-random bytes so failures reproduce
    out = bytearray()
    seed = hashlib.sha256(name.encode("utf-8")).digest()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def mac_path(url, prefix):
    """The bytes the MAC covers: URL path without leading '/', %XX-decoded
    once ('+' stays '+'), base prefix stripped."""
    raw = urllib.parse.urlsplit(url).path.lstrip("/")
    path = urllib.parse.unquote_to_bytes(raw)
    pre = prefix.encode("utf-8")
    if pre and path.startswith(pre):
        path = path[len(pre):]
    return path


def expected_mac(scheme, secret, path, size, ctype):
    if scheme == "v":
        msg = path + b" " + str(size).encode()
    elif scheme == "v2":
        msg = path + b"\0" + str(size).encode() + b"\0" + ctype.encode()
    else:
        raise ValueError(scheme)
    return hmac.new(secret.encode("utf-8"), msg, hashlib.sha256).hexdigest()


class HttpResult:
    def __init__(self, status, headers, body, error=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error


def http_request(method, url, body=None, headers=None, timeout=30):
    parts = urllib.parse.urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return HttpResult(resp.status, resp.getheaders(), data)
    except Exception as exc:  # connection refused, reset, timeout
        return HttpResult(None, [], b"", error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def describe(method, url, req_headers, res, body_len=None):
    """One block of text describing an HTTP exchange, for stderr."""
    lines = [f"  request: {method} {url}"]
    for k, v in (req_headers or {}).items():
        lines.append(f"    {k}: {v}")
    if body_len is not None:
        lines.append(f"    (body: {body_len} bytes)")
    if res.error:
        lines.append(f"  error: {res.error}")
    else:
        lines.append(f"  response: {res.status}")
        for k, v in res.headers:
            lines.append(f"    {k}: {v}")
        lines.append(f"  body: {res.body[:500]!r}")
    return "\n".join(lines)


def short(res):
    if res.error:
        return res.error
    return f"status {res.status} body {res.body[:200]!r}"


class UploadClient(slixmpp.ClientXMPP):
    def __init__(self, args, results):
        super().__init__(
            args.jid,
            args.password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_scram": True, "unencrypted_plain": True},
            },
        )
        # Loopback test servers without certificates: plain c2s, no TLS.
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.args = args
        self.results = results
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.finished = asyncio.get_event_loop().create_future()

    def on_failed_auth(self, _event):
        self.results.fail(f"{self.args.label} login", "SASL authentication failed")
        if not self.finished.done():
            self.finished.set_result(False)

    async def on_start(self, _event):
        try:
            await self.run_cases()
        except Exception as exc:  # keep going to a clean exit
            self.results.fail(f"{self.args.label} client", f"unexpected {type(exc).__name__}: {exc}")
        finally:
            if not self.finished.done():
                self.finished.set_result(True)

    async def run_cases(self):
        r, label = self.results, self.args.label
        r.ok(f"{label} login")
        # --- discovery (XEP-0030 items + info) ---
        found = set()
        try:
            items = await self.plugin["xep_0030"].get_items(jid=self.boundjid.domain, timeout=15)
            for item in items["disco_items"]["items"]:
                info = await self.plugin["xep_0030"].get_info(jid=item[0], timeout=15)
                if NS_UPLOAD in info["disco_info"]["features"]:
                    found.add(str(item[0]))
        except Exception as exc:
            r.fail(f"{label} discover", f"{type(exc).__name__}: {exc}")
        for svc in self.args.services:
            name = f"{svc['label']} discover {svc['jid']}"
            if svc["jid"] in found:
                r.ok(name)
            else:
                r.fail(name, f"not among upload services {sorted(found)}")
        for svc in self.args.services:
            await self.run_service(svc)

    async def get_slot(self, svc, filename, size, ctype):
        iq = await self.plugin["xep_0363"].request_slot(svc["jid"], filename, size, ctype, timeout=15)
        slot = iq["http_upload_slot"]
        headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
        return slot["put"]["url"], slot["get"]["url"], headers

    def check_mac(self, svc, put_url, size, ctype):
        """Returns None if the slot's PUT URL carries the MAC of
        mod_http_upload_external's protocol, else the reason."""
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(put_url).query)
        param = svc["scheme"]
        if param not in query:
            return f"no ?{param}= in {put_url}"
        got = query[param][0]
        want = expected_mac(param, self.args.secret, mac_path(put_url, self.args.prefix), size, ctype)
        if not hmac.compare_digest(got.lower(), want):
            return f"MAC {got} != expected {want} over {mac_path(put_url, self.args.prefix)!r}"
        return None

    def put(self, url, body, ctype, slot_headers, length=None):
        headers = {"Content-Type": ctype, "Content-Length": str(len(body) if length is None else length)}
        headers.update(slot_headers)
        res = http_request("PUT", url, body=body, headers=headers)
        return res, headers

    def expect(self, name, method, url, req_headers, res, want_status, body_len=None):
        if res.status == want_status:
            self.results.ok(name)
            return True
        self.results.fail(name, f"expected {want_status}, got {short(res)}")
        print(f"--- {name}\n{describe(method, url, req_headers, res, body_len)}", file=sys.stderr, flush=True)
        return False

    async def run_service(self, svc):
        r, lab = self.results, svc["label"]
        first = None
        for filename, ctype, size in FILES:
            body = file_content(filename, size)
            size = len(body)
            digest = hashlib.sha256(body).hexdigest()
            case = f'{lab} "{filename}"'
            try:
                put_url, get_url, slot_headers = await self.get_slot(svc, filename, size, ctype)
            except Exception as exc:
                r.fail(f"{case} slot", f"{type(exc).__name__}: {exc}")
                continue
            print(f"# {case}: PUT {put_url}  GET {get_url}  headers {slot_headers}", file=sys.stderr, flush=True)
            why = self.check_mac(svc, put_url, size, ctype)
            if why:
                r.fail(f"{case} slot mac", why)
            else:
                r.ok(f"{case} slot mac")
            if self.args.no_http:
                continue
            res, hdrs = self.put(put_url, body, ctype, slot_headers)
            if not self.expect(f"{case} put 201", "PUT", put_url, hdrs, res, 201, size):
                continue
            res = http_request("GET", get_url)
            if res.status == 200 and hashlib.sha256(res.body).hexdigest() == digest:
                r.ok(f"{case} get sha256")
            else:
                got = hashlib.sha256(res.body).hexdigest() if res.status == 200 else ""
                r.fail(f"{case} get sha256", f"expected 200 sha256 {digest}, got {short(res) if res.status != 200 else 'sha256 ' + got + ' len ' + str(len(res.body))}")
                print(f"--- {case} get\n{describe('GET', get_url, {}, res)}", file=sys.stderr, flush=True)
                continue
            if first is None:
                first = (filename, ctype, body, put_url, get_url, slot_headers)
        if self.args.no_http or first is None:
            if not self.args.no_http:
                r.fail(f"{lab} conflict/tamper cases", "skipped: no successful upload")
            return
        filename, ctype, body, put_url, get_url, slot_headers = first

        # GET of the PUT URL (same path, with the signature query) serves the file.
        res = http_request("GET", put_url)
        if res.status == 200 and res.body == body:
            r.ok(f"{lab} get via put url")
        else:
            r.fail(f"{lab} get via put url", f"expected 200 and same body, got {short(res) if res.status != 200 else 'different body'}")
            print(f"--- {lab} get via put url\n{describe('GET', put_url, {}, res)}", file=sys.stderr, flush=True)

        # Second PUT to the same slot: 409, and the stored file is unchanged.
        other = bytes(b ^ 0x5A for b in body)
        res, hdrs = self.put(put_url, other, ctype, slot_headers)
        self.expect(f"{lab} second put 409", "PUT", put_url, hdrs, res, 409, len(other))
        res = http_request("GET", get_url)
        if res.status == 200 and res.body == body:
            r.ok(f"{lab} file unchanged after 409")
        else:
            r.fail(f"{lab} file unchanged after 409", short(res) if res.status != 200 else "content changed")

        # Tampered MAC on a fresh slot: 403, nothing stored.
        name = "tamper me.txt"
        data = b"tampered upload must not be stored\n"
        ctype2 = "text/plain"
        try:
            put2, get2, h2 = await self.get_slot(svc, name, len(data), ctype2)
        except Exception as exc:
            r.fail(f"{lab} tamper slot", f"{type(exc).__name__}: {exc}")
            return
        parts = urllib.parse.urlsplit(put2)
        q = urllib.parse.parse_qsl(parts.query)
        mac = dict(q)[svc["scheme"]]
        flipped = ("0" if mac[0] != "0" else "1") + mac[1:]
        bad_mac_url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(
            [(k, flipped if k == svc["scheme"] else v) for k, v in q])))
        res, hdrs = self.put(bad_mac_url, data, ctype2, h2)
        self.expect(f"{lab} tampered mac 403", "PUT", bad_mac_url, hdrs, res, 403, len(data))

        # Same MAC, different file name in the path: 403.
        new_path = parts.path.replace("tamper%20me.txt", "tamper%20mE.txt").replace("tamper_me.txt", "tamper_mE.txt")
        if new_path == parts.path:
            r.fail(f"{lab} tampered path 403", f"could not find the file name in {put2}")
        else:
            bad_path_url = urllib.parse.urlunsplit(parts._replace(path=new_path))
            res, hdrs = self.put(bad_path_url, data, ctype2, h2)
            self.expect(f"{lab} tampered path 403", "PUT", bad_path_url, hdrs, res, 403, len(data))

        # Right MAC, but a size the MAC does not cover: 403 (size is bound).
        longer = data + b"extra"
        res, hdrs = self.put(put2, longer, ctype2, h2)
        self.expect(f"{lab} wrong size 403", "PUT", put2, hdrs, res, 403, len(longer))

        # None of the rejected PUTs left a file behind.
        res = http_request("GET", get2)
        self.expect(f"{lab} nothing stored after 403", "GET", get2, {}, res, 404)

        # The untampered slot still works afterwards.
        res, hdrs = self.put(put2, data, ctype2, h2)
        if self.expect(f"{lab} untampered put 201 after rejects", "PUT", put2, hdrs, res, 201, len(data)):
            res = http_request("GET", get2)
            if res.status == 200 and res.body == data:
                r.ok(f"{lab} untampered get")
            else:
                r.fail(f"{lab} untampered get", short(res))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--prefix", default="upload/", help="base prefix stripped before the MAC")
    p.add_argument("--label", required=True)
    p.add_argument("--service", action="append", required=True, metavar="LABEL=JID=SCHEME")
    p.add_argument("--no-http", action="store_true", help="only check slots and MACs")
    p.add_argument("--timeout", type=float, default=120, help="overall limit in seconds")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    args.services = []
    for s in args.service:
        label, jid, scheme = s.split("=")
        if scheme not in ("v", "v2"):
            p.error(f"unknown scheme {scheme}")
        args.services.append({"label": label, "jid": jid, "scheme": scheme})
    return args


def main():
    args = parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results = Results()
    client = UploadClient(args, results)
    client.connect(host=args.addr, port=args.port)

    async def run():
        try:
            await asyncio.wait_for(asyncio.shield(client.finished), timeout=args.timeout)
        except asyncio.TimeoutError:
            results.fail(f"{args.label} client", f"timed out after {args.timeout}s (login or requests hung)")
        client.disconnect()
        try:
            await asyncio.wait_for(client.disconnected, timeout=5)
        except Exception:
            pass
        # let slixmpp's background tasks wind down quietly
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    loop.run_until_complete(run())
    if results.passed == 0 and results.failed == 0:
        results.fail(f"{args.label} client", "no case ran")
    print(f"# {args.label}: {results.passed} passed, {results.failed} failed", file=sys.stderr, flush=True)
    sys.exit(0 if results.failed == 0 else 1)


if __name__ == "__main__":
    main()
