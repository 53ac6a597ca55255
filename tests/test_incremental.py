"""Incremental runs against a real S3 server: exactly the difference is labeled."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.dataset as ds
import pytest
import s3fs
from PIL import Image

from tests.fixtures.cli import run_cli

pytestmark = pytest.mark.slow
LABELER = "tests.fixtures.versioned_labeler:VersionedLabeler"


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _rows(s3_server, bucket: str) -> list[dict]:
    fs = s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                           client_kwargs={"endpoint_url": s3_server.endpoint}, skip_instance_cache=True)
    files = fs.glob(f"{bucket}/out/labels/*.parquet")
    return ds.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()


def _run(s3_server, bucket: str, *extra: str, prefect, ray_env, index=None) -> dict:
    # Reporting to the suite's Prefect server and joining the suite's Ray, as a deployed nightly run
    # would: these sequences are about the ledger, and each run saves the ~7 s starts of a temporary
    # Prefect server and of a local Ray (test_run_e2e runs those).
    env = s3_server.env() | (index.env() if index is not None else {}) | {"PREFECT_API_URL": prefect.api_url} | ray_env
    result = run_cli("run", f"s3://{bucket}/photos", "--out", f"s3://{bucket}/out", "--labeler", LABELER,
                     "--mode", "incremental", "--shard-size", "3", "--json", "--no-progress", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _indexed(index) -> dict[str, dict]:
    client = index.client()
    client.indices.refresh(index=index.name)
    hits = client.search(index=index.name, body={"size": 100, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_source"]["uri"]: h["_source"] for h in hits}


def test_incremental_runs_label_exactly_the_difference(s3_server, search_index, prefect_server, ray_local_join_env):
    bucket = s3_server.new_bucket("inc")
    client = s3_server.client()
    for i in range(6):
        client.put_object(Bucket=bucket, Key=f"photos/{i}.jpg", Body=_jpeg(i))

    first = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert first["images_this_run"] == 6 and first["plan"]["new"] == 6
    assert len(_indexed(search_index)) == 6

    again = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert again["images_this_run"] == 0 and again["plan"]["unchanged"] == 6
    assert again["run_id"] != first["run_id"]  # each incremental run is its own run

    client.put_object(Bucket=bucket, Key="photos/6.jpg", Body=_jpeg(6))
    client.put_object(Bucket=bucket, Key="photos/7.jpg", Body=_jpeg(7))
    client.put_object(Bucket=bucket, Key="photos/2.jpg", Body=_jpeg(102))  # changed content
    client.delete_object(Bucket=bucket, Key="photos/4.jpg")
    etag_2 = client.head_object(Bucket=bucket, Key="photos/2.jpg")["ETag"].strip('"')

    third = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert third["plan"] == {"listed": 7, "new": 2, "changed": 1, "retry": 0, "stale": 0, "unchanged": 4, "deleted": 1, "skipped": 0}
    assert third["images_this_run"] == 3
    rows = _rows(s3_server, bucket)
    by_uri = {}
    for row in rows:
        assert row["uri"] not in by_uri, f"two rows for {row['uri']}"
        by_uri[row["uri"]] = row
    assert sorted(u.rsplit("/", 1)[1] for u in by_uri) == [f"{i}.jpg" for i in range(8)]
    assert by_uri[f"s3://{bucket}/photos/4.jpg"]["deleted_at"] is not None
    assert all(r["deleted_at"] is None for u, r in by_uri.items() if not u.endswith("/4.jpg"))
    assert by_uri[f"s3://{bucket}/photos/2.jpg"]["etag"] == etag_2
    # The index follows: the deleted object's document is gone, the changed one is updated, one per image.
    docs = _indexed(search_index)
    assert sorted(u.rsplit("/", 1)[1] for u in docs) == [f"{i}.jpg" for i in range(8) if i != 4]
    assert docs[f"s3://{bucket}/photos/2.jpg"]["etag"] == etag_2
    assert third["index"]["documents_deleted"] == 1 and third["index"]["error"] is None

    # The labeler is upgraded: --relabel-stale relabels every live object, once.
    fourth = _run(s3_server, bucket, "-L", "version=v2", "--relabel-stale", index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert fourth["plan"]["stale"] == 7 and fourth["images_this_run"] == 7
    rows = _rows(s3_server, bucket)
    live = [r for r in rows if r["deleted_at"] is None]
    assert len(live) == len({r["uri"] for r in live}) == 7
    assert {r["labeler_version"] for r in live} == {"versioned/v2"}
    docs = _indexed(search_index)
    assert len(docs) == 7 and {d["labeler_version"] for d in docs.values()} == {"versioned/v2"}
    assert len(rows) == 8

    # Without --relabel-stale, the same upgrade labels nothing.
    fifth = _run(s3_server, bucket, "-L", "version=v3", prefect=prefect_server, ray_env=ray_local_join_env)
    assert fifth["images_this_run"] == 0


def test_object_deleted_then_re_added_keeps_exactly_one_live_row_and_document(s3_server, search_index, prefect_server, ray_local_join_env):
    bucket = s3_server.new_bucket("readd")
    client = s3_server.client()
    for i in range(4):
        client.put_object(Bucket=bucket, Key=f"photos/{i}.jpg", Body=_jpeg(i))
    uri = f"s3://{bucket}/photos/1.jpg"

    first = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert first["plan"]["new"] == 4

    client.delete_object(Bucket=bucket, Key="photos/1.jpg")
    second = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert second["plan"]["deleted"] == 1 and second["images_this_run"] == 0
    tombstone = [r for r in _rows(s3_server, bucket) if r["uri"] == uri]
    assert len(tombstone) == 1 and tombstone[0]["deleted_at"] is not None
    assert uri not in _indexed(search_index)

    client.put_object(Bucket=bucket, Key="photos/1.jpg", Body=_jpeg(1))  # re-added, same content
    third = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert third["plan"] == {"listed": 4, "new": 1, "changed": 0, "retry": 0, "stale": 0, "unchanged": 3, "deleted": 0, "skipped": 0}
    assert third["images_this_run"] == 1
    rows = _rows(s3_server, bucket)
    mine = [r for r in rows if r["uri"] == uri]
    assert len(mine) == 1, mine
    assert mine[0]["deleted_at"] is None and mine[0]["run_id"] == third["run_id"]
    assert mine[0]["shard_id"] != tombstone[0]["shard_id"]
    assert len(rows) == len({r["uri"] for r in rows}) == 4
    assert all(r["deleted_at"] is None for r in rows)
    docs = _indexed(search_index)
    assert len(docs) == 4 and docs[uri]["run_id"] == third["run_id"]  # back in the index, once

    fourth = _run(s3_server, bucket, index=search_index, prefect=prefect_server, ray_env=ray_local_join_env)
    assert fourth["plan"]["unchanged"] == 4 and fourth["images_this_run"] == 0
