#!/usr/bin/env python3
"""tuspy (the tus organisation's Python client) driven from the command line.

Used by interop/resumable/run.sh (conformance) and benches/tus.sh (throughput). All the
protocol work is tuspy's; this file only wires it up and reports what happened.

    tus_py.py upload ENDPOINT FILE [--chunk-size N] [--metadata k=v ...] [--checksum]
                     [--store DB.json] [--crash-after-chunks K] [--expect-offset N]

ENDPOINT is the tus creation URL (for xferd: a signed URL of the target path; for
@tus/server: http://HOST:PORT/files/). With --store, tuspy keeps the upload URL in a
TinyDB file keyed by the file's fingerprint, and a later run with the same --store
resumes that upload instead of creating a new one (tuspy's own resumability).
--crash-after-chunks K makes the process SIGKILL itself right after the K-th PATCH was
acknowledged: a client that dies mid-upload, leaving only what tuspy stored.
--expect-offset N (with --store): fail unless the resumed upload starts at offset N.

TLS: the server certificate is verified against REQUESTS_CA_BUNDLE when that is set
(requests reads it), else --insecure turns verification off.

Prints one JSON object on stdout:
    {"url", "resumed", "start_offset", "offset", "size", "chunks", "seconds", "mb_per_s",
     "error" (on failure), "status", "body"}
Exit status 0 when the upload completed, 1 otherwise.
"""
import argparse
import json
import os
import signal
import sys
import time

from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.storage import filestorage


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload")
    up.add_argument("endpoint")
    up.add_argument("file")
    up.add_argument("--chunk-size", type=int, default=4 * 1024 * 1024)
    up.add_argument("--metadata", action="append", default=[], help="key=value")
    up.add_argument("--checksum", action="store_true", help="send Upload-Checksum (sha1) per PATCH")
    up.add_argument("--store", help="TinyDB file for tuspy's URL storage (resumability)")
    up.add_argument("--crash-after-chunks", type=int, default=0)
    up.add_argument("--expect-offset", type=int)
    up.add_argument("--insecure", action="store_true")
    args = ap.parse_args()

    size = os.path.getsize(args.file)
    metadata = {}
    for kv in args.metadata:
        k, _, v = kv.partition("=")
        metadata[k] = v
    out = {"url": None, "resumed": False, "start_offset": None, "offset": None, "size": size,
           "chunks": 0, "seconds": None, "mb_per_s": None}

    kwargs = dict(chunk_size=args.chunk_size, metadata=metadata, upload_checksum=args.checksum,
                  verify_tls_cert=not args.insecure)
    if args.store:
        kwargs.update(store_url=True, url_storage=filestorage.FileStorage(args.store))

    t0 = time.monotonic()
    try:
        client = tus_client.TusClient(args.endpoint)
        # With store_url, the constructor looks the fingerprint up and HEADs a stored URL.
        uploader = client.uploader(args.file, **kwargs)
        out["resumed"] = uploader.url is not None
        out["start_offset"] = uploader.offset
        out["url"] = uploader.url
        if args.expect_offset is not None and uploader.offset != args.expect_offset:
            out["error"] = "resumed at offset %s, expected %s" % (uploader.offset, args.expect_offset)
            print(json.dumps(out))
            return 1
        if uploader.url is None:
            uploader.set_url(uploader.create_url())
            uploader.offset = 0
            out["url"] = uploader.url
        while uploader.offset < size:
            uploader.upload_chunk()
            out["chunks"] += 1
            out["offset"] = uploader.offset
            if args.crash_after_chunks and out["chunks"] >= args.crash_after_chunks:
                out["crashed"] = True
                print(json.dumps(out), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        out["offset"] = uploader.offset
    except (TusCommunicationError, TusUploadFailed) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
        out["status"] = getattr(e, "status_code", None)
        body = getattr(e, "response_content", None)
        if isinstance(body, bytes):
            body = body[:400].decode("utf-8", "replace")
        out["body"] = body
        print(json.dumps(out))
        return 1
    except Exception as e:  # noqa: BLE001 - report anything tuspy or requests raised
        out["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(out))
        return 1
    secs = time.monotonic() - t0
    out["seconds"] = round(secs, 4)
    out["mb_per_s"] = round((size - (out["start_offset"] or 0)) / 1e6 / secs, 2) if secs > 0 else None
    print(json.dumps(out))
    return 0 if out["offset"] == size else 1


if __name__ == "__main__":
    sys.exit(main())
