"""`humantag run` end to end: real Ray, real Prefect, real files and a real S3 server."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import s3fs

from tests.fixtures.bad_inputs import write_bad_corpus
from humantag.indexers.documents import document_id
from tests.fixtures.cli import popen_cli, run_cli

pytestmark = pytest.mark.slow


def _rows(dest: Path) -> list[dict]:
    return ds.dataset(str(dest / "labels"), format="parquet").to_table().to_pylist()


def _tree_state(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_bad_inputs_never_stop_a_run_and_rerun_writes_nothing(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "out"
    expected = write_bad_corpus(src)
    result = run_cli("run", str(src), "--out", str(dest), "--labeler", "image-facts", "--shard-size", "4", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "Token authentication" not in result.stderr  # no Ray banner on every run
    summary = json.loads(result.stdout)
    assert summary["total_images"] == len(expected)
    assert summary["shards_total"] == summary["shards_done_now"] == -(-len(expected) // 4)

    rows = {r["uri"].rsplit("/", 1)[1]: r for r in _rows(dest)}
    assert sorted(rows) == sorted(expected)  # exactly one row per file
    for name, expect in expected.items():
        row = rows[name]
        assert row["status"] == expect.status, (name, row["error_kind"], row["error_message"])
        assert row["error_kind"] == expect.error_kind, name
        if expect.status == "ok":
            assert (row["width"], row["height"]) == (expect.width, expect.height), name
            assert row["phash"] and len(row["phash"]) == 16
        else:
            assert row["error_message"]
        assert row["labeler"] == "image-facts" and row["labeler_version"].startswith("image-facts/")
        assert row["schema_version"] and row["run_id"] == summary["run_id"] and row["shard_id"]
    errors = {k: v for k, v in summary["errors"].items()}
    assert sum(errors.values()) == sum(e.status == "error" for e in expected.values())

    # DuckDB reads the documented glob as one table.
    import duckdb

    count = duckdb.sql(f"select count(*) from read_parquet('{dest}/labels/**/*.parquet')").fetchall()[0][0]
    assert count == len(expected)

    before = _tree_state(dest / "labels") | _tree_state(dest / "_runs" / summary["run_id"] / "shards")
    again = run_cli("run", str(src), "--out", str(dest), "--labeler", "image-facts", "--shard-size", "4", "--json", "--no-progress")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["run_id"] == summary["run_id"]
    assert second["shards_done_now"] == 0 and second["images_this_run"] == 0
    after = _tree_state(dest / "labels") | _tree_state(dest / "_runs" / summary["run_id"] / "shards")
    assert after == before  # nothing new written
    # Run history: the no-op rerun adds a record and keeps the real run's summary.
    run_dir = dest / "_runs" / summary["run_id"]
    attempts = sorted(json.loads(p.read_text())["started_at"] for p in (run_dir / "attempts").glob("*.json"))
    assert attempts == sorted([summary["started_at"], second["started_at"]])
    kept = json.loads((run_dir / "summary.json").read_text())
    assert kept["shards_done_now"] == summary["shards_done_now"] and kept["started_at"] == summary["started_at"]
    assert summary["startup_s"] > 0 and summary["labeling_s"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "{src}", "--out", "{out}", "--shard-size", "0"], "--shard-size"),
        (["run", "{src}/nope", "--out", "{out}"], "does not exist"),
        (["run", "{empty}", "--out", "{out}"], "no images found"),
        (["run", "{src}", "--out", "/proc/humantag-cannot-write"], "cannot write to"),
        (["run", "{src}", "--out", "{out}", "--labeler", "nope"], "unknown labeler"),
        (["run", "{src}", "--out", "{out}", "--labeler-option", "novalue"], "KEY=VALUE"),
        (["run", "{src}", "--out", "{out}", "--frobnicate"], "No such option"),
    ],
)
def test_bad_arguments_are_one_readable_line(tmp_path, args, message):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    fmt = {"src": str(src), "out": str(tmp_path / "out"), "empty": str(tmp_path / "empty")}
    result = run_cli(*[a.format(**fmt) for a in args], timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("humantag: error:") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_help_explains_every_option():
    result = run_cli("run", "--help", timeout=60)
    assert result.returncode == 0
    for flag in ("--out", "--shard-size", "--replicas", "--labeler", "--num-gpus", "--include", "--endpoint-url", "--run-id"):
        assert flag in result.stdout


def _upload(s3_server, folder: Path, bucket: str, prefix: str) -> list[str]:
    client = s3_server.client()
    keys = []
    for path in sorted(folder.iterdir()):
        key = f"{prefix}/{path.name}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    return keys


def test_s3_source_and_destination(s3_server, tmp_path):
    corpus = tmp_path / "corpus"
    expected = write_bad_corpus(corpus)
    bucket = s3_server.new_bucket("archive")
    _upload(s3_server, corpus, bucket, "photos/2024")
    env = s3_server.env()
    result = run_cli(
        "run", f"s3://{bucket}/photos", "--out", f"s3://{bucket}/humantag", "--labeler", "image-facts",
        "--shard-size", "8", "--json", "--no-progress", env=env,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total_images"] == len(expected)
    fs = s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                           client_kwargs={"endpoint_url": s3_server.endpoint})
    files = fs.glob(f"{bucket}/humantag/labels/*.parquet")
    assert len(files) == summary["shards_total"]
    table = ds.dataset(files, filesystem=fs, format="parquet").to_table()
    rows = table.to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(f"s3://{bucket}/photos/2024/{n}" for n in expected)
    assert all(r["etag"] for r in rows if r["status"] == "ok")
    assert fs.exists(f"{bucket}/humantag/_runs/{summary['run_id']}/summary.json")
    assert not [p for p in fs.find(f"{bucket}/humantag") if p.endswith((".tmp", ".partial"))]

    wrong = dict(env, AWS_SECRET_ACCESS_KEY="not-the-secret")
    failed = run_cli("run", f"s3://{bucket}/photos", "--out", str(tmp_path / "o2"), "--labeler", "image-facts", env=wrong)
    assert failed.returncode == 2
    assert "refused the credentials" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "not-the-secret" not in failed.stderr


def _photos(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg", quality=80)


def _flow_runs_named(prefect_server, name: str) -> list:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> list:
        async with get_client() as client:
            return await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        return asyncio.run(read())


@pytest.mark.parametrize(
    "command, sig",
    [("run", signal.SIGTERM), ("backfill", signal.SIGKILL), ("backfill", signal.SIGINT)],
    ids=["run-sigterm", "backfill-sigkill", "backfill-ctrl-c"],
)
def test_interrupted_driver_then_rerun_gives_exactly_one_row_and_one_document_per_image(tmp_path, command, sig, search_index, prefect_server):
    src, dest = tmp_path / "src", tmp_path / "out"
    _photos(src, 240)
    args = (command, str(src), "--out", str(dest), "--labeler", "image-facts", "--shard-size", "8",
            "--shard-concurrency", "1", "--batch-size", "4", "--no-progress", "--json")
    env = search_index.env()  # every shard is indexed after its commit, the rerun catches up
    if sig == signal.SIGTERM:  # a scheduler's SIGTERM: a deployed run, reporting to a Prefect server
        env["PREFECT_API_URL"] = prefect_server.api_url
    proc = popen_cli(*args, env=env)
    markers = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = list((dest / "_runs").glob("*/shards/*.json"))
        if len(runs) >= 3:
            markers = runs
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    assert markers, "the run never committed a shard"
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session
        proc.wait(timeout=60)
    else:
        # Ctrl-C in a terminal signals the whole process group (Prefect's temporary server, Ray's workers too);
        # a scheduler's SIGTERM reaches the driver alone.
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
        proc.wait(timeout=15)
        stderr = proc.stderr.read().decode()
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 128 + sig, stderr
        assert re.fullmatch(r"humantag: interrupted after \d+ of 30 shards; rerun the same command to resume", lines[-1]), stderr
        # The start line (and with a Prefect server, the flow run's address), then the one line.
        assert len(lines) <= 2 + ("PREFECT_API_URL" in env) and "Traceback" not in stderr, stderr
    done_at_kill = len(list((dest / "_runs").glob("*/shards/*.json")))
    assert done_at_kill < 30, "the run finished before it could be killed"
    if sig == signal.SIGTERM:  # the server shows the run as crashed, saying why, not as Running forever
        (run_id,) = [p.name for p in (dest / "_runs").iterdir()]
        (flow_run,) = _flow_runs_named(prefect_server, run_id)
        assert flow_run.state.type.value == "CRASHED", flow_run.state
        assert re.fullmatch(r"SIGTERM: interrupted after \d+ of 30 shards; rerun the same command to resume",
                            flow_run.state.message), flow_run.state.message

    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["index"]["shards_pending"] == 0 and summary["index"]["error"] is None
    assert summary["shards_done_before"] >= 3
    assert summary["shards_done_now"] == 30 - summary["shards_done_before"]
    rows = _rows(dest)
    uris = [r["uri"] for r in rows]
    assert len(uris) == len(set(uris)) == 240
    assert all(r["status"] == "ok" for r in rows)
    assert len(list((dest / "labels").glob("*.parquet"))) == 30
    assert not list((dest / "labels").glob("*.tmp"))  # temp files of the killed writer are gone
    assert search_index.count() == 240  # one document per image: ids are hashes of the uris
    client = search_index.client()
    ids = [h["_id"] for h in client.search(index=search_index.name, body={"size": 1000, "_source": False})["hits"]["hits"]]
    assert sorted(ids) == sorted(document_id(u) for u in uris)
