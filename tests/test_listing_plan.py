"""Listing streams what matches; the plan is deterministic and the manifest reads back per shard."""

from pathlib import Path

import pytest

from humantag.flows.errors import UserError
from humantag.flows.listing import SourceSpec, iter_source
from humantag.flows.plan import build_plan, read_shard_objects
from humantag.indexers.layout import OutputLayout
from humantag.workers.storage import StorageOptions, filesystem


def _tree(root: Path) -> None:
    for rel in ["a/1.jpg", "a/2.JPEG", "a/skip.txt", "b/c/3.png", "b/c/4.Png", ".hidden/5.jpg", "b/.6.jpg", "raw/7.jpg"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (len(rel) + 1))


def test_local_listing_filters_and_keeps_metadata(tmp_path):
    _tree(tmp_path)
    objs = list(iter_source(SourceSpec(url=str(tmp_path)), StorageOptions()))
    names = [o.uri.split(str(tmp_path))[1] for o in objs]
    assert names == ["/a/1.jpg", "/a/2.JPEG", "/b/c/3.png", "/b/c/4.Png", "/raw/7.jpg"]
    assert all(o.uri.startswith("file:///") and o.size_bytes and o.mtime for o in objs)

    spec = SourceSpec(url=f"file://{tmp_path}", include=("b/*", "a/*"), exclude=("*/4.*",))
    names = [o.uri.rsplit("/", 1)[1] for o in iter_source(spec, StorageOptions())]
    assert names == ["1.jpg", "2.JPEG", "3.png"]


def test_missing_source_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(iter_source(SourceSpec(url=str(tmp_path / "nope")), StorageOptions()))


def test_plan_is_deterministic_and_manifest_reads_back(tmp_path):
    src = tmp_path / "src"
    for i in range(23):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"{i:03d}.jpg").write_bytes(b"y" * i)
    plans = []
    for attempt in range(2):
        fs, root = filesystem(str(tmp_path / f"out{attempt}"))
        layout = OutputLayout(root)
        objs = iter_source(SourceSpec(url=str(src)), StorageOptions())
        plans.append((build_plan(objs, fs, layout, "r1", str(src), shard_size=5), fs, layout))
    (p1, fs, layout), (p2, _, _) = plans
    assert [s.shard_id for s in p1.shards] == [s.shard_id for s in p2.shards]
    assert [s.count for s in p1.shards] == [5, 5, 5, 5, 3]
    assert p1.total_objects == 23
    seen = []
    for shard in p1.shards:
        seen.extend(o.uri for o in read_shard_objects(fs, layout, "r1", shard))
    assert len(seen) == len(set(seen)) == 23

    # Changing one file's content (size) changes exactly the shard that holds it.
    victim = src / "d1" / "010.jpg"
    victim.write_bytes(b"changed content")
    fs3, root3 = filesystem(str(tmp_path / "out3"))
    p3 = build_plan(iter_source(SourceSpec(url=str(src)), StorageOptions()), fs3, OutputLayout(root3), "r1", str(src), 5)
    changed = [a.shard_id != b.shard_id for a, b in zip(p1.shards, p3.shards)]
    assert sum(changed) == 1


def test_s3_listing_streams_pages_with_etags(s3_server):
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    for i in range(1105):  # more than one 1,000-key page
        client.put_object(Bucket=bucket, Key=f"photos/{i:05d}.jpg", Body=b"z")
    client.put_object(Bucket=bucket, Key="photos/readme.txt", Body=b"z")
    client.put_object(Bucket=bucket, Key="other/9.jpg", Body=b"z")
    storage = StorageOptions(endpoint_url=s3_server.endpoint, key=s3_server.access_key, secret=s3_server.secret_key)
    objs = list(iter_source(SourceSpec(url=f"s3://{bucket}/photos"), storage))
    assert len(objs) == 1105
    assert objs[0].uri == f"s3://{bucket}/photos/00000.jpg"
    assert [o.uri for o in objs] == sorted(o.uri for o in objs)
    assert all(o.etag and o.size_bytes == 1 and o.mtime for o in objs)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 3])
def test_s3_outage_between_listing_pages_is_waited_out(s3_server, monkeypatch, workers):
    import threading
    import time

    from humantag.flows import listing

    monkeypatch.setattr(listing, "_PAGE", 4)
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    keys = [f"photos/{i:02d}.jpg" for i in range(6)] + [f"photos/{d}/{i}.jpg" for d in "ab" for i in range(5)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"z")
    storage = StorageOptions(endpoint_url=s3_server.endpoint, key=s3_server.access_key, secret=s3_server.secret_key,
                             retry_budget_s=60)
    objects = iter_source(SourceSpec(url=f"s3://{bucket}/photos"), storage, workers=workers)
    listed = [next(objects)]  # the first page is in: S3 goes away for 5 s
    s3_server.stop()
    restarter = threading.Thread(target=lambda: (time.sleep(5), s3_server.start()))
    restarter.start()
    try:
        listed += list(objects)
    finally:
        restarter.join()
    assert sorted(o.uri for o in listed) == sorted(f"s3://{bucket}/{k}" for k in keys)  # each key once


def test_s3_wrong_secret_is_a_clear_user_error(s3_server):
    bucket = s3_server.new_bucket()
    storage = StorageOptions(endpoint_url=s3_server.endpoint, key=s3_server.access_key, secret="wrong")
    with pytest.raises(UserError, match="refused the credentials"):
        list(iter_source(SourceSpec(url=f"s3://{bucket}/x"), storage))
