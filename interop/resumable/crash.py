#!/usr/bin/env python3
"""Crash test for tus uploads, for interop/resumable/run.sh (Python's http.client as the
tus client: plain tus 1.0 requests, one connection per upload, one thread per upload).

    crash.py run URLS.txt WORKDIR --kill-pid PID [--kill-at 0.5] [--size N] [--patch N]
    crash.py resume WORKDIR

"run": one upload per signed URL in URLS.txt (one a line), each of --size random bytes
(kept in WORKDIR/fNN.bin), created with POST, then sent in --patch-sized PATCHes by its
own thread, all at once. When --kill-at of all bytes have been acknowledged (204), it sends
SIGKILL to PID (the server) itself, so the kill lands while PATCHes are in flight; the
threads then fail and stop. WORKDIR/state.json records per upload the upload URL, the last
acknowledged offset and how far it had sent.

"resume" (after the server was restarted): HEAD each upload, check the offset is at least
the acknowledged one and at most what was sent, PATCH the rest from that offset, then GET
the target path and compare SHA-256. Prints PASS/FAIL lines; exit 0 when all passed.
TLS: --cacert PEM (else no verification).
"""
import argparse
import hashlib
import http.client
import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.parse as up

TH = {"Tus-Resumable": "1.0.0"}


def conn_for(url, ctx):
    u = up.urlsplit(url)
    if u.scheme == "https":
        return http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def target(url):
    u = up.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def ctx_for(cacert):
    if cacert:
        return ssl.create_default_context(cafile=cacert)
    return ssl._create_unverified_context()


def run(args):
    urls = [l.strip() for l in open(args.urls) if l.strip()]
    ctx = ctx_for(args.cacert)
    n = len(urls)
    total = n * args.size
    lock = threading.Lock()
    state = [dict(signed_url=u, file=os.path.join(args.workdir, "f%02d.bin" % i), size=args.size,
                  upload_url=None, acked=0, sent_to=0, error=None, create_status=None)
             for i, u in enumerate(urls)]
    for s in state:
        with open(s["file"], "wb") as f:
            f.write(os.urandom(args.size))
    acked_total = [0]
    killed = {"at": None, "t": None}
    barrier = threading.Barrier(n, timeout=60)

    def maybe_kill():
        if killed["at"] is None and acked_total[0] >= args.kill_at * total:
            killed["at"] = acked_total[0]
            killed["t"] = time.time()
            os.kill(args.kill_pid, signal.SIGKILL)

    def worker(s):
        data = open(s["file"], "rb").read()
        c = conn_for(s["signed_url"], ctx)
        try:
            c.request("POST", target(s["signed_url"]), body=b"",
                      headers=dict(TH, **{"Upload-Length": str(s["size"]),
                                          "Upload-Metadata": "filename " + "ZGF0YS5iaW4="}))
            r = c.getresponse()
            r.read()
            s["create_status"] = r.status
            loc = r.getheader("Location")
            if r.status != 201 or not loc:
                s["error"] = "creation: status %s, Location %r" % (r.status, loc)
                barrier.abort()
                return
            s["upload_url"] = up.urljoin(s["signed_url"], loc)
            barrier.wait()
            off = 0
            while off < s["size"]:
                chunk = data[off:off + args.patch]
                s["sent_to"] = off + len(chunk)
                c.request("PATCH", target(s["upload_url"]), body=chunk,
                          headers=dict(TH, **{"Upload-Offset": str(off),
                                              "Content-Type": "application/offset+octet-stream"}))
                r = c.getresponse()
                body = r.read()
                if r.status != 204:
                    s["error"] = "PATCH at %d: status %s %r" % (off, r.status, body[:200])
                    return
                new = int(r.getheader("Upload-Offset", "-1"))
                if new != off + len(chunk):
                    s["error"] = "PATCH at %d: Upload-Offset %s, expected %d" % (off, new, off + len(chunk))
                    return
                with lock:
                    s["acked"] = new
                    acked_total[0] += len(chunk)
                    maybe_kill()
                off = new
        except Exception as e:  # noqa: BLE001 - the kill makes every in-flight request fail
            if s["error"] is None:
                s["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in state]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, 120 - (time.time() - t0)))
    alive = sum(t.is_alive() for t in threads)
    out = dict(uploads=state, killed_at_bytes=killed["at"], total=total,
               kill_time=killed["t"], threads_still_running=alive)
    json.dump(out, open(os.path.join(args.workdir, "state.json"), "w"), indent=1)
    created = sum(1 for s in state if s["upload_url"])
    done = sum(1 for s in state if s["acked"] == s["size"])
    print(json.dumps(dict(created=created, killed_at_bytes=killed["at"], total=total,
                          complete_before_kill=done, threads_still_running=alive,
                          acked=[s["acked"] for s in state],
                          errors=sorted({(s["error"] or "")[:120] for s in state}))))
    return 0 if killed["at"] is not None and created == len(state) else 1


def resume(args):
    st = json.load(open(os.path.join(args.workdir, "state.json")))
    ctx = ctx_for(args.cacert)
    passed = failed = 0
    bad_offsets, bad_resume, bad_sha, notes = [], [], [], []
    lock = threading.Lock()

    def one(i, s):
        data = open(s["file"], "rb").read()
        c = conn_for(s["upload_url"], ctx)
        try:
            c.request("HEAD", target(s["upload_url"]), headers=TH)
            r = c.getresponse()
            r.read()
            off = r.getheader("Upload-Offset")
            if s["acked"] == s["size"] and r.status in (404, 410):
                pass  # completed before the kill; the upload resource may be gone
            elif r.status not in (200, 204) or off is None or not (s["acked"] <= int(off) <= s["sent_to"]):
                with lock:
                    bad_offsets.append("upload %d %s: HEAD -> %s, Upload-Offset %s; acknowledged %d, sent up to %d" % (
                        i, s["upload_url"], r.status, off, s["acked"], s["sent_to"]))
                if off is None:
                    return
            if off is not None:
                off = int(off)
                with lock:
                    notes.append(off - s["acked"])
                while off < s["size"]:
                    chunk = data[off:off + args.patch]
                    c.request("PATCH", target(s["upload_url"]), body=chunk,
                              headers=dict(TH, **{"Upload-Offset": str(off),
                                                  "Content-Type": "application/offset+octet-stream"}))
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 204:
                        with lock:
                            bad_resume.append("upload %d: PATCH %s Upload-Offset %d (%d bytes) -> %s %r" % (
                                i, s["upload_url"], off, len(chunk), r.status, body[:200]))
                        return
                    off = int(r.getheader("Upload-Offset"))
            get_url = up.urlunsplit(up.urlsplit(s["signed_url"])[:3] + ("", ""))
            c.request("GET", target(get_url))
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or hashlib.sha256(body).digest() != hashlib.sha256(data).digest():
                with lock:
                    bad_sha.append("upload %d: GET %s -> %s, %d bytes, sha256 %s want %s" % (
                        i, get_url, r.status, len(body), hashlib.sha256(body).hexdigest(),
                        hashlib.sha256(data).hexdigest()))
        except Exception as e:  # noqa: BLE001
            with lock:
                bad_resume.append("upload %d %s: %s: %s" % (i, s["upload_url"], type(e).__name__, e))
        finally:
            c.close()

    ups = [s for s in st["uploads"] if s["upload_url"]]
    threads = [threading.Thread(target=one, args=(i, s), daemon=True) for i, s in enumerate(ups)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1, 120 - (time.time() - t0)))
    if any(t.is_alive() for t in threads):
        bad_resume.append("%d resume threads still running after 120 s" % sum(t.is_alive() for t in threads))
    n = len(st["uploads"])
    print("# kill at %s of %s bytes acknowledged; per-upload acknowledged offsets %s" % (
        st["killed_at_bytes"], st["total"], [s["acked"] for s in st["uploads"]]))
    if notes:
        print("# HEAD offset minus acknowledged offset after restart: min %d, max %d (bytes past the last 204 kept)" % (
            min(notes), max(notes)))
    for name, bad in (("after kill -9 and restart, HEAD offsets of %d uploads are >= acknowledged and <= sent" % n,
                       bad_offsets),
                      ("all %d uploads resumed from their HEAD offsets to completion" % n, bad_resume),
                      ("all %d uploads GET -> 200 with the right SHA-256" % n, bad_sha)):
        if bad or len(ups) != n:
            failed += 1
            print("FAIL %s: %d problems" % (name, len(bad) + n - len(ups)))
            for b in bad[:10]:
                print("    | " + b)
        else:
            passed += 1
            print("PASS " + name)
    return 0 if failed == 0 else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("urls")
    r.add_argument("workdir")
    r.add_argument("--kill-pid", type=int, required=True)
    r.add_argument("--kill-at", type=float, default=0.5)
    r.add_argument("--size", type=int, default=8 * 1024 * 1024)
    r.add_argument("--patch", type=int, default=1024 * 1024)
    r.add_argument("--cacert")
    s = sub.add_parser("resume")
    s.add_argument("workdir")
    s.add_argument("--patch", type=int, default=1024 * 1024)
    s.add_argument("--cacert")
    args = p.parse_args()
    return run(args) if args.cmd == "run" else resume(args)


if __name__ == "__main__":
    sys.exit(main())
