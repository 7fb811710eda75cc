#!/usr/bin/env python3
"""Independent implementation of xferd's v3 signed URLs (HMAC File Server 3.4's v3 scheme).

MAC = hex(HMAC-SHA256(secret, METHOD + "\\n" + expires + "\\n" + "/" + path)), path being
the percent-decoded URL path without its leading slash. The URL carries the path
percent-encoded and `?v3=<hex>&expires=<unix seconds>`.

    v3sign.py sign  --secret S --base https://127.0.0.1:PORT --method PUT --path a/b.bin [--expires-in 3600]
    v3sign.py check --secret S --method PUT URL     # exit 0 if URL's v3 MAC is right

Used as a fallback when `xferd sign` is not available, and to cross-check it.
"""
import argparse
import hashlib
import hmac
import sys
import time
import urllib.parse


def mac(secret, method, expires, path):
    msg = "%s\n%d\n/%s" % (method, expires, path)
    return hmac.new(secret.encode(), msg.encode("utf-8"), hashlib.sha256).hexdigest()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sign")
    s.add_argument("--secret", required=True)
    s.add_argument("--base", required=True)
    s.add_argument("--method", default="PUT")
    s.add_argument("--path", required=True)
    s.add_argument("--expires-in", type=int, default=3600)
    c = sub.add_parser("check")
    c.add_argument("--secret", required=True)
    c.add_argument("--method", default="PUT")
    c.add_argument("--max-expires-in", type=int, default=3600 + 120)
    c.add_argument("url")
    a = p.parse_args()

    if a.cmd == "sign":
        path = a.path.lstrip("/")
        expires = int(time.time()) + a.expires_in
        quoted = urllib.parse.quote(path, safe="/")
        print("%s/%s?v3=%s&expires=%d" % (a.base.rstrip("/"), quoted, mac(a.secret, a.method, expires, path), expires))
        return 0

    u = urllib.parse.urlsplit(a.url)
    q = urllib.parse.parse_qs(u.query)
    if "v3" not in q or "expires" not in q:
        print("no v3/expires parameters in %s" % a.url)
        return 1
    path = urllib.parse.unquote(u.path.lstrip("/"), errors="strict")
    expires = int(q["expires"][0])
    want = mac(a.secret, a.method, expires, path)
    got = q["v3"][0].lower()
    now = time.time()
    if not hmac.compare_digest(want, got):
        print("v3 MAC %s, independent HMAC over %r gives %s" % (got, "%s\\n%d\\n/%s" % (a.method, expires, path), want))
        return 1
    if not (now < expires <= now + a.max_expires_in):
        print("expires=%d is not within (now, now+%d]" % (expires, a.max_expires_in))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
