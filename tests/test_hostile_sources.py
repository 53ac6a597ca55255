"""Odd entries, outages and full disks: a run finishes with a row or a counted skip per entry, or fails in one line.

Real Ray, Prefect, SeaweedFS and uvicorn; the flow runs in-process except where
the user's view (exit code, stderr) is what is checked.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

from humantag.flows.config import RunConfig
from humantag.flows.errors import ShardsFailed, format_failure
from humantag.flows.label_archive import run_label_archive
from humantag.flows.listing import SourceSpec
from humantag.indexers.documents import document_id
from humantag.indexers.layout import OutputLayout
from humantag.indexers.parquet_sink import write_shard
from humantag.workers.labelers import LabelerOptions
from humantag.workers.records import ErrorKind, LabeledImage, utcnow
from humantag.workers.reads import UnreadableObject, with_timeout
from humantag.workers.storage import DestinationFull, StorageOptions, StorageUnavailable, filesystem, write_bytes_atomic
from tests.fixtures.cli import REPO, cli_env, run_cli
from tests.fixtures.s3 import S3Server, free_port


def _png(value: int, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value % 255, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _rows(dest: Path) -> dict[str, dict]:
    rows = ds.dataset(str(dest / "labels"), format="parquet").to_table().to_pylist()
    by_name = {r["uri"].rsplit("/", 1)[1]: r for r in rows}
    assert len(by_name) == len(rows), "one row per object"
    return by_name


def _run_with_deadline(config: RunConfig, seconds: float = 240):
    """The flow in a thread: a hang fails the test instead of hanging the suite."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["summary"] = run_label_archive(config)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the run did not finish within {seconds}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def make_odd_folder(src: Path) -> dict[str, str]:
    """Good images plus every kind of entry that is not a regular image file; name -> expected error kind."""
    src.mkdir(parents=True)
    for i in range(4):
        (src / f"good-{i}.png").write_bytes(_png(i * 40))
    (src / "good#hash.png").write_bytes(_png(11))  # read as names, not as a fragment or a version
    (src / "good?versionId=2.png").write_bytes(_png(12))
    os.mkfifo(src / "y.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.jpg"))
    sock.close()  # the socket file stays
    os.mknod(src / "null.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a /dev/null twin (the suite runs as root)
    os.symlink(src / "loop.jpg", src / "loop.jpg")
    os.symlink(src / "gone.jpg", src / "dangling.jpg")
    (src / "strip.png").write_bytes(_png(9, size=(20_000, 1)))  # labelers cannot resize it
    with open(os.path.join(os.fsencode(src), b"caf\xe9.jpg"), "wb") as fh:  # Latin-1 name: not UTF-8
        fh.write(_png(77))
    return {"y.jpg": "fifo", "sock.jpg": "socket", "null.jpg": "device", "loop.jpg": "symlink_loop", "dangling.jpg": "dangling_symlink",
            "strip.png": "unsupported_geometry"}


@pytest.mark.slow
def test_odd_entries_become_rows_or_counted_skips(tmp_path: Path, ray_local: None) -> None:
    src, dest = tmp_path / "src", tmp_path / "out"
    expected = make_odd_folder(src)
    config = RunConfig(source=SourceSpec(url=str(src)), dest=str(dest), labeler="image-facts", shard_size=3, run_id="odd")
    summary = _run_with_deadline(config)

    assert summary.plan["skipped"] == 1  # the non-UTF-8 name: logged and counted
    good = [f"good-{i}.png" for i in range(4)] + ["good#hash.png", "good?versionId=2.png"]
    assert summary.total_images == len(good) + len(expected) and summary.ok == len(good)
    assert summary.errors == {kind: 1 for kind in expected.values()}
    rows = _rows(dest)
    assert sorted(rows) == sorted(good + list(expected))
    for name, kind in expected.items():
        assert rows[name]["status"] == "error" and rows[name]["error_kind"] == kind and rows[name]["error_message"], name
        assert not ErrorKind(kind).retryable  # the next run does not relabel them
    assert not list(dest.rglob("*.tmp")) and not list(dest.rglob("*.partial"))


def test_reads_time_out_and_failures_are_one_line_per_cause() -> None:
    with pytest.raises(UnreadableObject) as timed_out:
        with_timeout(lambda: time.sleep(3), 0.2, "file:///hung/mount.jpg")
    assert timed_out.value.kind == ErrorKind.READ_TIMEOUT and ErrorKind.READ_TIMEOUT.retryable

    from botocore.exceptions import EndpointConnectionError

    from humantag.flows.label_archive import is_infrastructure_error

    lost = RuntimeError("reading the manifest failed")
    lost.__cause__ = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert is_infrastructure_error(lost)  # a storage client's own error: the shard is retried
    assert not is_infrastructure_error(KeyError("connection"))  # a bug with a misleading word is not
    assert not is_infrastructure_error(DestinationFull(28, "full"))

    full = DestinationFull(28, "no space left on the destination /mnt/out/labels")
    unreachable = StorageUnavailable("storage unreachable (EndpointConnectionError: Could not connect)")
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = full
    lines = format_failure(ShardsFailed([("s1", wrapped), ("s2", full), ("s3", unreachable)]))
    assert lines == [
        "no space left on the destination /mnt/out/labels (2 shard(s) failed; rerun the same command to resume)",
        "storage unreachable (EndpointConnectionError: Could not connect) (1 shard(s) failed; rerun the same command to resume)",
    ]


@pytest.mark.slow
def test_serve_answers_healthz_while_fifo_thumbnails_are_asked(tmp_path: Path) -> None:
    import uvicorn

    from humantag.indexers.search.backends import open_backend
    from humantag.indexers.web import create_app

    photos, root = tmp_path / "photos", tmp_path / "dest"
    photos.mkdir()
    os.mkfifo(photos / "y.jpg")
    (photos / "ok.png").write_bytes(_png(100))
    rows = [LabeledImage(uri=(photos / name).as_uri(), status="ok", labeler="image-facts", labeler_version="t",
                         run_id="web", shard_id="s0", labeled_at=utcnow()) for name in ("y.jpg", "ok.png")]
    fs, path = filesystem(str(root))
    write_shard(fs, OutputLayout(path).labels_file("s0"), rows)
    backend = open_backend(str(root), None, StorageOptions())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend, StorageOptions()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        fifo_id, ok_id = document_id(rows[0].uri), document_id(rows[1].uri)
        httpx.get(f"{base}/api/search", params={"size": 10}, timeout=30).raise_for_status()  # the app learns the uris
        # More requests than the server's thread pool (40): a read that blocked would starve /healthz.
        with ThreadPoolExecutor(48) as pool:
            thumbs = [pool.submit(httpx.get, f"{base}/api/thumbnails/{fifo_id}.jpg", timeout=60) for _ in range(48)]
            health = httpx.get(f"{base}/healthz", timeout=30)
            answers = [f.result() for f in thumbs]
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert {a.status_code for a in answers} == {422}
        assert answers[0].json()["kind"] == "fifo"
        good = httpx.get(f"{base}/api/thumbnails/{ok_id}.jpg", timeout=30)
        assert good.status_code == 200 and good.headers["content-type"] == "image/jpeg"
    finally:
        server.should_exit = True
        thread.join(20)
        backend.close()


@pytest.mark.slow
def test_s3_outage_of_20s_mid_run_is_ridden_out_and_odd_keys_are_keys(tmp_path: Path, ray_local: None,
                                                                      s3_server: S3Server) -> None:
    from humantag.flows import progress

    bucket = s3_server.new_bucket("outage")
    client = s3_server.client()
    names = [f"img-{i:02d}.png" for i in range(10)] + ["a?versionId=3.png", "b#frag.png"]
    for i, name in enumerate(names):
        client.put_object(Bucket=bucket, Key=f"src/{name}", Body=_png(i * 20))
    storage = StorageOptions(endpoint_url=s3_server.endpoint, key=s3_server.access_key, secret=s3_server.secret_key,
                             region="us-east-1")
    dest = tmp_path / "out"
    config = RunConfig(source=SourceSpec(url=f"s3://{bucket}/src"), dest=str(dest), labeler="image-facts",
                       shard_size=4, shard_concurrency=1, storage=storage, run_id="outage",
                       labeler_options=LabelerOptions(batch_size=1))

    class StopOnFirstBatch(progress.NoProgress):
        """After the first labeled image, stop SeaweedFS for 20 s: the rest is read during the outage."""

        def __init__(self) -> None:
            self.stopped_at: float | None = None
            self.restarter: threading.Thread | None = None
            self.writer: threading.Thread | None = None
            self.written = False

        def advance(self, images: int, errors: int) -> None:
            if self.stopped_at is None:
                s3_server.stop()
                self.stopped_at = time.monotonic()
                self.restarter = threading.Thread(target=self._restart, daemon=True)
                self.restarter.start()
                self.writer = threading.Thread(target=self._write_during_outage, daemon=True)
                self.writer.start()

        def _write_during_outage(self) -> None:  # what a commit to an S3 destination does
            fs, path = filesystem(f"s3://{bucket}/out/marker.json", storage)
            write_bytes_atomic(fs, path, b"{}", storage)
            self.written = True

        def _restart(self) -> None:
            time.sleep(20)
            s3_server.start()

    listener = StopOnFirstBatch()
    progress.set_listener(listener)
    try:
        summary = _run_with_deadline(config)
    finally:
        progress.set_listener(None)
        for thread in (listener.restarter, listener.writer):
            if thread is not None:
                thread.join(120)
    assert listener.stopped_at is not None  # the outage happened mid-run
    assert listener.written and client.get_object(Bucket=bucket, Key="out/marker.json")["Body"].read() == b"{}"
    assert s3_server.process.poll() is None
    rows = _rows(dest)
    failed = {name: row["error_message"] for name, row in rows.items() if row["status"] != "ok"}
    assert summary.total_images == len(names) and summary.ok == len(names), failed
    assert summary.shards_done_now == summary.shards_total  # no rerun needed
    assert sorted(rows) == sorted(names)  # '?versionId=' and '#' read as part of the key
    assert max(r["read_ms"] for r in rows.values()) > 10_000  # a read was retried through the outage, inside its shard


@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    src, mount = tmp_path / "src", tmp_path / "small"
    src.mkdir()
    mount.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # incompressible pixels: the labels outgrow the tmpfs after a few shards
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), np.uint8)).save(src / f"{i:02d}.png")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mount)], check=True)
    try:
        result = run_cli("run", str(src), "--out", str(mount / "out"), "--labeler", "image-facts",
                         "--shard-size", "2", "--no-progress")
        leftovers = [str(p) for p in mount.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert result.returncode not in (0, 3), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("humantag: error:")]
    assert len(errors) == 1, result.stderr
    assert "no space left on the destination" in errors[0] and str(mount) in errors[0], errors[0]
    repeats = [line for line in lines if line not in errors and ("space" in line or "Errno" in line or "Destination" in line)]
    assert repeats == [], result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers == []


@pytest.mark.slow
def test_processes_started_for_ray_end_when_the_driver_is_killed(tmp_path: Path) -> None:
    """What ensure_ray wraps around a local ray.init(): a `kill -9` of the driver ends them in seconds."""
    driver = (
        "import ray, subprocess, sys, time\n"  # ray first: the watchdog uses its bundled psutil
        "from flows.ray_reaper import tied_to_this_process\n"
        "with tied_to_this_process(grace_s=0.1):\n"
        "    child = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO)
    child_pid = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(150):
        try:
            with open(f"/proc/{child_pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the process started under the watchdog outlived its killed driver by 15 s")


@pytest.mark.slow
def test_an_index_holding_the_alias_name_is_reported_as_a_clash(tmp_path: Path, search_index) -> None:
    from humantag.indexers.opensearch.sync import sync_index

    search_index.client().indices.create(index=search_index.name)  # a concrete index where the read alias goes
    try:
        fs, root = filesystem(str(tmp_path / "out"))
        layout = OutputLayout(root)
        write_shard(fs, layout.labels_file("s0"), [LabeledImage(uri="file:///x.png", status="ok", labeler="t",
                                                                labeler_version="t", run_id="r", shard_id="s0",
                                                                labeled_at=utcnow())])
        report = sync_index(search_index.settings, fs, layout, "r")
    finally:
        search_index.client().indices.delete(index=search_index.name, ignore_unavailable=True)
    assert report.error and "exists where humantag needs an alias" in report.error, report.error
    assert "unavailable" not in report.error and report.shards_pending == 1


def _shards_of_one_row(out: Path, count: int) -> tuple:
    """Committed shards s0..s<count-1> of run "r", one ok row each: what indexing reads."""
    fs, root = filesystem(str(out))
    layout = OutputLayout(root)
    for i in range(count):
        write_shard(fs, layout.labels_file(f"s{i}"), [LabeledImage(
            uri=f"file:///img-{i}.png", status="ok", labeler="t", labeler_version="t", run_id="r", shard_id=f"s{i}",
            labeled_at=utcnow())])
    return fs, layout


@pytest.mark.slow
def test_opensearch_lost_mid_run_opens_the_breaker_and_the_end_sync_reports_pending(tmp_path: Path) -> None:
    from osmem_server import OsmemServer

    from humantag.flows.indexing import ShardIndexing
    from humantag.indexers.opensearch.settings import OpenSearchSettings

    fs, layout = _shards_of_one_row(tmp_path / "out", 3)
    server = OsmemServer.start(japanese=False, addr="127.0.0.1:0")
    indexing = ShardIndexing(OpenSearchSettings(urls=server.url, index="breaker"), fs, layout, "r")
    try:
        indexing.index_shard("s0")
        assert indexing.tripped is None and indexing.per_shard.documents_indexed == 1
    finally:
        server.close()
    indexing.index_shard("s1")  # one attempt, no backoff: the breaker opens
    assert indexing.tripped and "unavailable" in indexing.tripped
    indexing.index_shard("s2")  # skipped at once
    final = indexing.finish()
    # Without OpenSearch the sync cannot tell which physical index the markers are for: all count as pending.
    assert final.shards_indexed == 1 and final.shards_pending >= 2 and "unavailable" in (final.error or "")


@pytest.mark.slow
def test_the_breaker_closes_when_opensearch_answers_again(tmp_path: Path, search_index) -> None:
    from humantag.flows.indexing import ShardIndexing
    from tests.fixtures.flaky_proxy import FlakyProxy

    fs, layout = _shards_of_one_row(tmp_path / "out", 5)
    with FlakyProxy(search_index.url) as proxy:
        proxy.script.bulk.extend(["pass", "drop"])  # s0 indexed, s1's request dropped: an outage
        settings = search_index.settings.model_copy(update={"urls": [proxy.url], "retry_after_s": 1.0})
        indexing = ShardIndexing(settings, fs, layout, "r")
        indexing.index_shard("s0")
        indexing.index_shard("s1")
        assert indexing.tripped
        requests = proxy.script.bulk_requests
        indexing.index_shard("s2")  # within retry_after_s: skipped without a request
        assert proxy.script.bulk_requests == requests
        time.sleep(1.2)
        indexing.index_shard("s3")  # the try after retry_after_s: OpenSearch answers, the breaker closes
        assert indexing.tripped is None
        indexing.index_shard("s4")
        assert indexing.per_shard.shards_indexed == 3  # s0, s3, s4 as they committed
        final = indexing.finish()  # s1 and s2 by the catch-up sync
    assert final.error is None and final.shards_pending == 0
    assert search_index.count() == 5
