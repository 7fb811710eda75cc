#!/usr/bin/env python3
"""tuspy (the tus organisation's Python client) uploading one file through two servers.

Used by interop/cluster/run.sh. All the protocol work is tuspy's; this file only wires it up.

    tus_split.py ENDPOINT_A BASE_B FILE --split-at N [--chunk-size N] [--metadata k=v ...]

Creates the upload at ENDPOINT_A (a tus creation URL: for xferd a signed URL of the target
path) and PATCHes chunks until at least N bytes are acknowledged; then a second tuspy
uploader, given the upload URL rewritten to BASE_B (scheme://host:port of the other
instance), asks B for the offset (HEAD, inside tuspy) and sends the rest there.

TLS: verified against REQUESTS_CA_BUNDLE (requests reads it).

Prints one JSON object: {"url_a", "url_b", "offset_a", "offset_b_start", "offset", "size",
"chunks_a", "chunks_b", "seconds", "error" (on failure), "status", "body", "phase"}.
Exit status 0 when the upload completed on B, 1 otherwise.
"""
import argparse
import json
import os
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from tusclient import client as tus_client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint_a")
    ap.add_argument("base_b")
    ap.add_argument("file")
    ap.add_argument("--split-at", type=int, required=True)
    ap.add_argument("--chunk-size", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--metadata", action="append", default=[], help="key=value")
    args = ap.parse_args()

    size = os.path.getsize(args.file)
    metadata = dict(kv.partition("=")[::2] for kv in args.metadata)
    out = {"url_a": None, "url_b": None, "offset_a": 0, "offset_b_start": None, "offset": None,
           "size": size, "chunks_a": 0, "chunks_b": 0, "seconds": None, "phase": "create"}
    t0 = time.monotonic()
    try:
        a = tus_client.TusClient(args.endpoint_a).uploader(
            args.file, chunk_size=args.chunk_size, metadata=metadata)
        a.set_url(a.create_url())
        a.offset = 0
        out["url_a"] = a.url
        out["phase"] = "patch on A"
        while a.offset < min(args.split_at, size):
            a.upload_chunk()
            out["chunks_a"] += 1
            out["offset_a"] = a.offset
        # The same upload, addressed at the other instance.
        u, b = urlsplit(a.url), urlsplit(args.base_b)
        out["url_b"] = urlunsplit((b.scheme, b.netloc, u.path, u.query, u.fragment))
        out["phase"] = "HEAD on B"
        # Given a url, tuspy HEADs it for Upload-Offset in the constructor.
        bu = tus_client.TusClient(args.base_b).uploader(
            args.file, url=out["url_b"], chunk_size=args.chunk_size, metadata=metadata)
        out["offset_b_start"] = bu.offset
        out["phase"] = "patch on B"
        while bu.offset < size:
            bu.upload_chunk()
            out["chunks_b"] += 1
        out["offset"] = bu.offset
        out["phase"] = "done"
    except Exception as e:  # noqa: BLE001 - report anything tuspy or requests raised
        out["error"] = "%s: %s" % (type(e).__name__, e)
        out["status"] = getattr(e, "status_code", None)
        body = getattr(e, "response_content", None)
        if isinstance(body, bytes):
            body = body[:400].decode("utf-8", "replace")
        out["body"] = body
        print(json.dumps(out))
        return 1
    out["seconds"] = round(time.monotonic() - t0, 4)
    print(json.dumps(out))
    return 0 if out["offset"] == size else 1


if __name__ == "__main__":
    sys.exit(main())
