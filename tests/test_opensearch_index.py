"""Indexing DEST/labels into OpenSearch: template, aliases, idempotence, resume, retries, error reports.

Runs against osmem-server, or a real cluster when OPENSEARCH_URL is set
(see tests/fixtures/opensearch.py).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import fsspec
import pytest

from humantag.indexers.documents import document_id
from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import rewrite_shard
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.indexers.opensearch.sync import load_markers, rebuild_index, sync_index
from humantag.indexers.parquet_sink import write_shard
from tests.fixtures.cli import run_cli
from tests.fixtures.flaky_proxy import FlakyProxy
from humantag.workers.attributes import Box, Person, Scene
from humantag.workers.records import LabeledImage

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def _row(shard: str, i: int, **fields) -> LabeledImage:
    defaults = dict(
        uri=f"s3://media/archive/{shard}/{i:05d}.jpg", etag=f"e{i}", size_bytes=1000 + i, width=640, height=480,
        status="ok", labeler="cpu", labeler_version="cpu/1", run_id="r1", shard_id=shard, labeled_at=NOW,
        caption="a smiling woman in sunglasses on a beach", people_count=1,
        persons=[Person(eyewear="sunglasses", smiling=True, face_box=Box(x=1, y=2, w=30, h=30, score=0.9))],
        scene=Scene(environment="outdoor", setting="beach"),
    )
    defaults.update(fields)
    return LabeledImage(**defaults)


def _dest(tmp_path: Path, shards: int = 4, per_shard: int = 25) -> tuple[fsspec.AbstractFileSystem, OutputLayout, list[str]]:
    fs = fsspec.filesystem("file")
    layout = OutputLayout(str(tmp_path / "out"))
    uris = []
    for s in range(shards):
        shard = f"{s:05d}-{s:08x}"
        rows = [_row(shard, s * per_shard + i) for i in range(per_shard)]
        write_shard(fs, layout.labels_file(shard), rows)
        uris += [r.uri for r in rows]
    return fs, layout, uris


def _proxied(search_index, proxy: FlakyProxy, **overrides) -> OpenSearchSettings:
    values = dict(urls=proxy.url, index=search_index.name, max_retries=3, bulk_bytes=64 * 1024)
    values.update(overrides)
    return OpenSearchSettings(**values)


def test_template_mapping_and_aliases(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=2, per_shard=5)
    report = sync_index(search_index.settings, fs, layout, "r1")
    assert report.ok and report.documents_indexed == 10 and report.index == f"{search_index.name}-v1"
    client = search_index.client()

    template = client.indices.get_index_template(name=search_index.name)["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [f"{search_index.name}-v*"]
    assert template["composed_of"] == [f"{search_index.name}-settings", f"{search_index.name}-mappings"]
    mapping = client.indices.get_mapping(index=f"{search_index.name}-v1")[f"{search_index.name}-v1"]["mappings"]
    assert mapping["dynamic"] == "strict"
    props = mapping["properties"]
    assert props["persons"]["type"] == "nested"
    assert props["persons"]["properties"]["eyewear"]["type"] == "keyword"
    assert props["caption"]["type"] == "text" and props["caption"]["analyzer"] == "english"
    assert props["caption"]["fields"]["raw"]["type"] == "keyword"
    for name, kind in [("uri", "keyword"), ("bucket", "keyword"), ("prefix", "keyword"), ("people_count", "integer"),
                       ("width", "long"), ("labeled_at", "date"), ("mtime", "date"), ("labeler_version", "keyword"),
                       ("prompt_version", "keyword"), ("schema_version", "keyword"), ("status", "keyword")]:
        assert props[name]["type"] == kind, name
    assert props["scene"]["properties"]["setting"]["type"] == "keyword"

    aliases = client.indices.get_alias(name=f"{search_index.name}*")
    assert aliases == {f"{search_index.name}-v1": {"aliases": {search_index.name: {}, f"{search_index.name}-write": {"is_write_index": True}}}}

    doc = client.get(index=search_index.name, id=document_id(uris[0]))["_source"]
    assert doc["bucket"] == "media" and doc["prefix"].startswith("archive/")
    assert doc["persons"][0]["face_box"]["w"] == 30 and "gender_presentation" not in doc["persons"][0]


def test_reindexing_is_idempotent(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path)
    first = sync_index(search_index.settings, fs, layout, "r1")
    assert first.ok and first.documents_indexed == len(uris)
    again = sync_index(search_index.settings, fs, layout, "r1")
    assert again.ok and again.shards_pending == 0 and again.documents_indexed == 0  # markers: nothing to redo
    markers = load_markers(fs, layout, f"{search_index.name}-v1")
    assert len(markers) == 4 and all(len(tokens) == 1 for tokens in markers.values())
    fs.rm(str(Path(layout.root) / "_index"), recursive=True)  # forget the markers: everything is sent again
    forced = sync_index(search_index.settings, fs, layout, "r1")
    assert forced.documents_indexed == len(uris)
    assert search_index.count() == len(uris)  # same ids: updated, never duplicated


def test_error_rows_are_indexed_and_deleted_objects_leave_the_index(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=1, per_shard=6)
    shard = layout.labels_file("00000-00000000").rsplit("/", 1)[1][:-8]
    rows = [_row(shard, i) for i in range(5)] + [
        _row(shard, 5, status="error", error_kind="truncated", error_message="image file is truncated", caption=None,
             persons=None, scene=None, people_count=None, width=None, height=None)
    ]
    write_shard(fs, layout.labels_file(shard), rows)
    assert sync_index(search_index.settings, fs, layout, "r1").ok
    client = search_index.client()
    errors = client.search(index=search_index.name, body={"query": {"term": {"error_kind": "truncated"}}})["hits"]["hits"]
    assert [h["_source"]["uri"] for h in errors] == [rows[5].uri]

    rewrite_shard(fs, layout, shard, delete_uris=[rows[0].uri, rows[1].uri])  # what an incremental run does
    report = sync_index(search_index.settings, fs, layout, "r1")
    assert report.ok and report.documents_deleted == 2
    assert search_index.count() == 4
    assert not client.exists(index=search_index.name, id=document_id(rows[0].uri))
    assert sync_index(search_index.settings, fs, layout, "r1").documents_deleted == 0  # nothing left to do
    assert len(load_markers(fs, layout, f"{search_index.name}-v1")[shard]) == 1  # the old version's marker is gone


def test_429_then_recovery(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path)
    with FlakyProxy(search_index.url) as proxy:
        proxy.script.bulk.extend([429, 429, 503, "drop"])
        report = sync_index(_proxied(search_index, proxy), fs, layout, "r1")
    assert report.ok, report
    assert proxy.script.faults_served == 4 and proxy.script.bulk_requests > 4
    assert search_index.count() == len(uris)


def test_interrupted_index_run_resumes_where_it_stopped(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=6, per_shard=40)
    with FlakyProxy(search_index.url) as proxy:
        # Small requests; after three answered, OpenSearch "goes away" for longer than the retries last.
        settings = _proxied(search_index, proxy, max_retries=1, bulk_bytes=16 * 1024)
        proxy.script.bulk.extend(["pass"] * 3 + [503] * 10)
        first = sync_index(settings, fs, layout, "r1")
    assert first.error and "503" in first.error
    done = load_markers(fs, layout, f"{search_index.name}-v1")
    assert 0 < len(done) < 6 and first.shards_pending == 6 - len(done)

    with FlakyProxy(search_index.url) as proxy:
        second = sync_index(_proxied(search_index, proxy), fs, layout, "r1")
        sent = proxy.script.bulk_documents
    assert second.ok and second.shards_indexed == 6 - len(done)
    assert sent == 40 * (6 - len(done))  # only the shards that were not acknowledged are sent again
    assert search_index.count() == len(uris)


def test_rejected_documents_go_to_an_error_report_and_are_retried(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=2, per_shard=5)
    bad = uris[7]
    with FlakyProxy(search_index.url) as proxy:
        proxy.script.reject_ids.add(document_id(bad))
        report = sync_index(_proxied(search_index, proxy), fs, layout, "r1")
    assert report.documents_failed == 1 and report.shards_failed == 1 and report.shards_indexed == 1
    [path] = report.error_reports
    assert path.startswith(str(Path(layout.root) / "_runs" / "r1" / "index_errors"))
    [line] = Path(path).read_text().splitlines()
    entry = json.loads(line)
    assert entry["uri"] == bad and entry["status"] == 400 and "mapper_parsing_exception" in json.dumps(entry["error"])
    assert len(load_markers(fs, layout, f"{search_index.name}-v1")) == 1  # the failed shard is not marked

    retry = sync_index(search_index.settings, fs, layout, "r2")
    assert retry.ok and retry.shards_indexed == 1
    assert search_index.count() == len(uris)


def test_rebuild_swaps_aliases_while_searches_keep_working(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=8, per_shard=50)
    assert sync_index(search_index.settings, fs, layout, "r1").ok
    client = search_index.client()
    seen: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def search_loop() -> None:
        while not stop.is_set():
            try:
                seen.append(client.count(index=search_index.name)["count"])
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                failures.append(exc)
            time.sleep(0.005)

    thread = threading.Thread(target=search_loop)
    thread.start()
    try:
        report = rebuild_index(search_index.settings, fs, layout, "rebuild-1")
    finally:
        stop.set()
        thread.join()
    assert report.ok and report.index == f"{search_index.name}-v2" and report.documents_indexed == len(uris)
    assert not failures and seen and set(seen) == {len(uris)}  # never a half-filled index
    aliases = client.indices.get_alias(name=f"{search_index.name}*")
    assert set(aliases) == {f"{search_index.name}-v2"}
    assert client.indices.exists(index=f"{search_index.name}-v1")  # kept for a rollback

    third = rebuild_index(search_index.settings, fs, layout, "rebuild-2")
    assert third.index == f"{search_index.name}-v3"
    assert not client.indices.exists(index=f"{search_index.name}-v1")  # only the previous one is kept


@pytest.mark.slow
def test_cli_index_never_shows_secrets_and_errors_in_one_line(search_index, tmp_path):
    fs, layout, uris = _dest(tmp_path, shards=1, per_shard=3)
    secret = "hunter2-very-secret"
    closed = f"http://admin:{secret}@127.0.0.1:9"  # nothing listens on port 9
    result = run_cli("-v", "index", layout.root, "--opensearch-url", closed, "--index", search_index.name, timeout=180,
                     env={"OPENSEARCH_URL": ""})
    assert result.returncode == 2
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("humantag: error: OpenSearch at http://127.0.0.1:9 unavailable")

    ok = run_cli("index", layout.root, "--json", "--no-progress", env=search_index.env(), timeout=180)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["documents_indexed"] == 3
    bad = run_cli("index", layout.root, "--opensearch-url", "ftp://x", timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "humantag: error: --opensearch-url: OpenSearch URL must be http(s)://host[:port], got 'ftp://x'"]
