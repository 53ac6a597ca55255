"""One live row and one document per image, whatever sequence of runs (issue 12).

The flow runs in-process on the session's Ray, into a local folder and into
SeaweedFS; OpenSearch is the osmem server (or OPENSEARCH_URL).
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from humantag.flows.config import PoolConfig, RunConfig
from humantag.flows.label_archive import run_label_archive
from humantag.flows.listing import SourceSpec
from humantag.indexers.documents import document_id
from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import label_files, ledger_table
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.workers.storage import StorageOptions, filesystem

pytestmark = pytest.mark.slow


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Place:
    """A source and an output on one kind of storage."""

    src: str
    out: str
    storage: StorageOptions
    put: Callable[[str, bytes], None]
    remove: Callable[[str], None]

    def add(self, *seeds: int) -> None:
        for seed in seeds:
            self.put(f"{seed:03d}.png", _png(seed))

    def fs_layout(self) -> tuple[Any, OutputLayout]:
        fs, root = filesystem(self.out, self.storage)
        fs.invalidate_cache()
        return fs, OutputLayout(root)

    def config(self, shard_size: int, run_id: Optional[str] = None, incremental: bool = False,
               opensearch: Optional[OpenSearchSettings] = None) -> RunConfig:
        return RunConfig(
            source=SourceSpec(url=self.src), dest=self.out, storage=self.storage, labeler="image-facts",
            shard_size=shard_size, run_id=run_id, incremental=incremental, opensearch=opensearch,
            pool=PoolConfig(replicas=1, num_cpus=0.5, decode_cpus=0.25),
        )

    def run(self, shard_size: int, run_id: Optional[str] = None, incremental: bool = False,
            opensearch: Optional[OpenSearchSettings] = None) -> Any:
        return run_label_archive(self.config(shard_size, run_id, incremental, opensearch))


def _local(tmp_path) -> Place:
    src = tmp_path / "src"
    src.mkdir()
    return Place(str(src), str(tmp_path / "out"), StorageOptions(), lambda name, data: (src / name).write_bytes(data),
                 lambda name: (src / name).unlink())


def humantag(*args: str) -> Any:
    """The `humantag` CLI in-process (its Prefect flows and Ray calls too)."""
    from typer.testing import CliRunner

    from humantag.flows.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _json(result: Any) -> dict:
    """The JSON report a `--json` command printed last."""
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path) -> Place:
    if request.param == "local":
        return _local(tmp_path)
    s3 = request.getfixturevalue("s3_env")  # the CLI (doctor) reads the standard AWS variables
    bucket = s3.new_bucket("live")
    client = s3.client()
    storage = StorageOptions(endpoint_url=s3.endpoint, key=s3.access_key, secret=s3.secret_key, region="us-east-1")
    return Place(f"s3://{bucket}/photos", f"s3://{bucket}/out", storage,
                 lambda name, data: client.put_object(Bucket=bucket, Key=f"photos/{name}", Body=data),
                 lambda name: client.delete_object(Bucket=bucket, Key=f"photos/{name}"))


def _physical_rows(place: Place) -> list[dict]:
    fs, layout = place.fs_layout()
    rows = []
    for path in label_files(fs, layout):
        with fs.open(path, "rb") as fh:
            rows += pq.read_table(fh, columns=["uri", "shard_id", "labeled_at", "run_id", "deleted_at"]).to_pylist()
    return rows


def _docs(search_index) -> dict[str, dict]:
    client = search_index.client()
    client.indices.refresh(index=search_index.name)
    hits = client.search(index=search_index.name, body={"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
    docs: dict[str, dict] = {}
    for hit in hits:
        assert hit["_source"]["uri"] not in docs, f"two documents for {hit['_source']['uri']}"
        docs[hit["_source"]["uri"]] = hit["_source"]
    return docs


def _assert_one_live_row(place: Place, images: int, search_index=None, physical_once: bool = True) -> dict[str, dict]:
    """Exactly one live row per image, the newest; and the index holds that row, once per image."""
    fs, layout = place.fs_layout()
    live = ledger_table(fs, layout).to_pylist()
    by_uri = {r["uri"]: r for r in live}
    assert len(live) == len(by_uri) == images
    rows = _physical_rows(place)
    newest = {}
    for row in rows:
        if row["uri"] not in newest or (row["labeled_at"], row["shard_id"]) > (newest[row["uri"]]["labeled_at"], newest[row["uri"]]["shard_id"]):
            newest[row["uri"]] = row
    assert ({u: (r["shard_id"], r["labeled_at"]) for u, r in newest.items() if r["deleted_at"] is None}
            == {u: (r["shard_id"], r["labeled_at"]) for u, r in by_uri.items()})
    if physical_once:  # sequential runs: the commits themselves removed the older rows
        counts = collections.Counter(r["uri"] for r in rows)
        assert max(counts.values()) == 1, counts.most_common(3)
    if search_index is not None:
        docs = _docs(search_index)
        assert set(docs) == set(by_uri)
        assert {u: d["shard_id"] for u, d in docs.items()} == {u: r["shard_id"] for u, r in by_uri.items()}
    return by_uri


def test_full_runs_with_other_shard_sizes_and_run_ids_keep_one_live_row(place, ray_local, search_index):
    settings = search_index.settings
    place.add(*range(10))
    place.run(shard_size=4, opensearch=settings)
    first = _assert_one_live_row(place, 10, search_index)

    place.run(shard_size=3, opensearch=settings)  # another shard size: every shard id changes
    second = _assert_one_live_row(place, 10, search_index)
    assert all(second[u]["labeled_at"] > first[u]["labeled_at"] for u in first)

    place.add(10, 11)  # the archive grew: another run id, shards hash other contents
    summary = place.run(shard_size=4, run_id="r2", opensearch=settings)
    assert summary.total_images == 12
    third = _assert_one_live_row(place, 12, search_index)
    assert {r["shard_id"] for r in third.values()}.isdisjoint({r["shard_id"] for r in second.values()})

    # An older version's leftover, on this storage: a second copy of a shard's rows, older, unmarked.
    fs, layout = place.fs_layout()
    with fs.open(layout.labels_file(min(r["shard_id"] for r in third.values())), "rb") as fh:  # a file with rows
        table = pq.read_table(fh)
    older = table.to_pylist()
    for row in older:
        row.update(shard_id="s000000-0123456789ab", labeled_at=row["labeled_at"] - dt.timedelta(hours=1))
    with fs.open(layout.labels_file("s000000-0123456789ab"), "wb") as fh:
        pq.write_table(pa.Table.from_pylist(older, schema=table.schema), fh)
    _assert_one_live_row(place, 12, physical_once=False)
    found = _json(humantag("doctor", place.out, "--json"))
    assert {f["kind"] for f in found["findings"]} == {"duplicate rows", "shard without marker"}
    assert humantag("doctor", place.out, "--fix").exit_code == 0
    assert _json(humantag("doctor", place.out, "--json"))["findings"] == []
    _assert_one_live_row(place, 12)


def test_full_incremental_full_keeps_one_live_row(place, ray_local, search_index):
    settings = search_index.settings
    place.add(*range(8))
    place.run(shard_size=3, opensearch=settings)
    place.put("002.png", _png(102))  # changed
    place.remove("005.png")  # deleted
    place.add(8)
    summary = place.run(shard_size=3, incremental=True, opensearch=settings)
    assert summary.plan["changed"] == 1 and summary.plan["deleted"] == 1 and summary.plan["new"] == 1
    _assert_one_live_row(place, 8, search_index)
    place.run(shard_size=5, run_id="full-again", opensearch=settings)
    _assert_one_live_row(place, 8, search_index)
    assert {r["run_id"] for r in _physical_rows(place) if r["deleted_at"] is None} == {"full-again"}
    # The deleted image's row stays a tombstone, never live again.
    tombstones = [r for r in _physical_rows(place) if r["deleted_at"] is not None]
    assert [r["uri"].rsplit("/", 1)[1] for r in tombstones] == ["005.png"]


def _temporary_prefect_servers() -> list[int]:
    """Pids of this process's children that serve Prefect's API (its temporary server)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"uvicorn" in command and b"prefect.server" in command:
            found.append(int(entry))
    return found


def test_two_concurrent_runs_leave_one_live_row_and_one_document(place, ray_local, search_index):
    from humantag.flows.label_archive import plan_run

    place.add(*range(12))
    settings = search_index.settings
    configs = [place.config(4, "a", opensearch=settings), place.config(5, "b", opensearch=settings)]
    for config in configs:  # both plan before either commits: neither knows the other's rows
        plan_run(config, config.run_id)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(run_label_archive, configs))
    assert [s.total_images for s in summaries] == [12, 12]
    # Both flows started at once in one process share one temporary Prefect server (a second one
    # would never be stopped and keep the terminal's output open after the process ends).
    assert len(_temporary_prefect_servers()) <= 1
    # Every image has a row from each run; the newer is the live one, in the ledger and in the index.
    assert len(_physical_rows(place)) == 24
    _assert_one_live_row(place, 12, search_index, physical_once=False)

    found = humantag("doctor", place.out, "--json")
    assert found.exit_code == 1
    kinds = collections.Counter(f["kind"] for f in _json(found)["findings"])
    assert set(kinds) == {"duplicate rows"}
    fixed = humantag("doctor", place.out, "--fix", "--json")
    assert fixed.exit_code == 0 and _json(fixed)["findings"] == []
    assert humantag("index", place.out, "--json", "--opensearch-url", search_index.url,
                    "--index", search_index.name, "--no-progress").exit_code == 0
    _assert_one_live_row(place, 12, search_index, physical_once=True)


def test_doctor_repairs_an_output_of_the_old_behaviour_and_index_restores_a_lost_index(tmp_path, ray_local, search_index):
    from humantag.flows.evaluation import load_predictions

    place = _local(tmp_path)
    place.add(*range(12))
    place.run(shard_size=6, run_id="new", opensearch=search_index.settings)
    fs, layout = place.fs_layout()
    # What an older version left: a second full run's shard holding the same images (its rows older),
    # never marked; a temporary file; markers of label files that are gone.
    first = label_files(fs, layout)[0]
    table = pq.read_table(first)
    older = table.to_pylist()
    for row in older:
        row.update(shard_id="s000000-0123456789ab", run_id="old", labeled_at=row["labeled_at"] - dt.timedelta(hours=1))
    pq.write_table(pa.Table.from_pylist(older, schema=table.schema), layout.labels_file("s000000-0123456789ab"))
    (tmp_path / "out" / "labels" / ".s000001-x.parquet.0a1b.tmp").write_bytes(b"half")
    (tmp_path / "out" / "_runs" / "new" / "shards" / "s000009-gone.json").write_text("{}")
    index_dir = tmp_path / "out" / "_index" / f"{search_index.name}-v1"
    (index_dir / "s000009-gone.0123456789abcdef.json").write_text("{}")

    assert len(ledger_table(fs, layout)) == 12  # readers see the newest row of each image only
    assert {r["run_id"] for r in load_predictions(place.out).values()} == {"new"}

    found = humantag("doctor", place.out, "--json")
    assert found.exit_code == 1
    report = _json(found)
    kinds = collections.Counter(f["kind"] for f in report["findings"])
    assert kinds == {"duplicate rows": 1, "temporary file": 1, "shard without marker": 1, "marker without file": 2}
    assert next(f for f in report["findings"] if f["kind"] == "duplicate rows")["path"].endswith("s000000-0123456789ab.parquet")

    fixed = humantag("doctor", place.out, "--fix")
    assert fixed.exit_code == 0, fixed.stdout
    again = _json(humantag("doctor", place.out, "--json"))
    assert again["findings"] == []
    _assert_one_live_row(place, 12)
    assert not list((tmp_path / "out").rglob("*.tmp"))

    # The index is lost and recreated empty under the same name: its markers are another instance's.
    client = search_index.client()
    client.indices.delete(index=f"{search_index.name}-v1")
    client.indices.create(index=f"{search_index.name}-v1")
    assert client.count(index=f"{search_index.name}-v1")["count"] == 0
    restored = humantag("index", place.out, "--json", "--opensearch-url", search_index.url, "--index", search_index.name, "--no-progress")
    assert restored.exit_code == 0
    assert _json(restored)["documents_indexed"] == 12
    _assert_one_live_row(place, 12, search_index)

    # Documents removed behind our back: the counts per shard disagree with the markers; reindexed.
    victim = next(iter(_docs(search_index).values()))
    client.delete(index=search_index.name, id=document_id(victim["uri"]), refresh=True)
    checked = humantag("index", place.out, "--json", "--opensearch-url", search_index.url, "--index", search_index.name, "--no-progress")
    report = _json(checked)
    assert report["count_mismatches"] == [victim["shard_id"]] and report["shards_verified"] >= 1
    _assert_one_live_row(place, 12, search_index)
