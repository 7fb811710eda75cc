#!/usr/bin/env python3
"""Uploads a file straight to an S3 endpoint with boto3 (the AWS SDK for Python), to show
what the store itself takes (the ceiling of every S3 row in benches/s3.sh).

  direct_s3.py ENDPOINT BUCKET KEY FILE --mode put|multipart [--part-mb 8] [--in-flight 4]

put: one PutObject of the whole file. multipart: boto3's managed transfer (s3transfer)
with parts of --part-mb MiB and --in-flight parts uploaded at once (xferd's part_size and
max_parts_in_flight). Payloads are SHA-256 signed as xferd signs them (plain http), no
extra CRC checksums (request_checksum_calculation=when_required). Credentials from
S3_KEY / S3_SECRET. Prints one JSON line: {"seconds", "bytes", "mode"}; exits non-zero
on failure (after checking the stored size with a HeadObject).
"""
import argparse
import json
import os
import sys
import time

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("bucket")
    ap.add_argument("key")
    ap.add_argument("file")
    ap.add_argument("--mode", choices=("put", "multipart"), required=True)
    ap.add_argument("--part-mb", type=int, default=8)
    ap.add_argument("--in-flight", type=int, default=4)
    a = ap.parse_args()
    cfg = botocore.config.Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=max(10, a.in_flight * 2),
        connect_timeout=10,
        read_timeout=600,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=a.endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["S3_KEY"],
        aws_secret_access_key=os.environ["S3_SECRET"],
        config=cfg,
    )
    size = os.path.getsize(a.file)
    t0 = time.monotonic()
    if a.mode == "put":
        with open(a.file, "rb") as f:
            s3.put_object(Bucket=a.bucket, Key=a.key, Body=f, ContentLength=size)
    else:
        part = a.part_mb * 1024 * 1024
        tc = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=a.in_flight,
            use_threads=a.in_flight > 1,
        )
        s3.upload_file(a.file, a.bucket, a.key, Config=tc)
    secs = time.monotonic() - t0
    stored = s3.head_object(Bucket=a.bucket, Key=a.key)["ContentLength"]
    if stored != size:
        print(json.dumps({"error": "stored %d bytes of %d" % (stored, size)}))
        return 1
    print(json.dumps({"seconds": secs, "bytes": size, "mode": a.mode}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
