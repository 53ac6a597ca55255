"""Runs an operator can trust: the pool is fitted to a real Ray cluster before work starts, and
a run is visible in a real Prefect server (named after its run id, tagged, its log lines kept)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds
import pytest

from humantag.flows.ray_runtime import LOCAL_INSTANCE_ENV
from tests.fixtures.cli import cli_env, run_cli
from tests.fixtures.sockets import listeners
from tests.fixtures.two_node_ray import two_node_ray  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def _photos(folder, count: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((30, 40, 3), i * 17 % 255, np.uint8)).save(folder / f"{i:02d}.png")


def test_two_replicas_on_a_two_node_two_cpu_cluster_run_on_both_nodes(two_node_ray, tmp_path):
    src, dest = tmp_path / "src", tmp_path / "out"
    _photos(src, 12)
    result = run_cli("run", str(src), "--out", str(dest), "--labeler", "image-facts", "--replicas", "2",
                     "--shard-size", "4", "--ray-address", two_node_ray.address, "--json", "--no-progress",
                     env=two_node_ray.env, timeout=240)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total_images"] == 12 and summary["replica_nodes"] == 2
    assert "× 0.5 CPU" in result.stderr  # each replica's share, derived from the cluster
    assert "Token authentication" not in result.stderr
    assert len(ds.dataset(str(dest / "labels")).to_table()) == 12


def test_the_two_node_cluster_listens_on_loopback_only(two_node_ray):
    found = listeners(two_node_ray.pid)
    assert len({x.pid for x in found if x.command == "raylet"}) == 2  # both nodes seen
    assert not [f"{x.command} on {x.host}:{x.port}" for x in found if not x.loopback]


def test_without_an_address_a_run_starts_its_own_instance_even_where_a_cluster_is_current(two_node_ray, prefect_server,
                                                                                          tmp_path):
    # Ray's bare `ray.init()` joins the cluster recorded as the machine's current one (`ray start`
    # writes it); our contract is a local instance unless RAY_ADDRESS or --ray-address names one.
    ray_tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        os.makedirs(os.path.join(ray_tmp, "ray"))
        with open(os.path.join(ray_tmp, "ray", "ray_current_cluster"), "w") as current:
            current.write(two_node_ray.address)
        src = tmp_path / "src"
        _photos(src, 4)
        env = {key: value for key, value in two_node_ray.env.items() if key not in LOCAL_INSTANCE_ENV}
        env |= {"RAY_TMPDIR": ray_tmp, "PREFECT_API_URL": prefect_server.api_url}  # no temporary Prefect server: ~7 s
        result = run_cli("run", str(src), "--out", str(tmp_path / "out"), "--labeler", "image-facts", "--replicas", "2",
                         "--shard-size", "2", "--json", "--no-progress", env=env, timeout=240)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total_images"] == 4 and summary["replica_nodes"] == 1  # the two-node cluster would give 2


def test_a_pool_that_cannot_fit_stops_at_once_with_the_fix(two_node_ray, tmp_path):
    src = tmp_path / "src"
    _photos(src, 2)
    started = time.monotonic()
    result = run_cli("run", str(src), "--out", str(tmp_path / "out"), "--labeler", "image-facts", "--replicas", "2",
                     "--num-cpus", "1", "--ray-address", two_node_ray.address, env=two_node_ray.env, timeout=120)
    elapsed = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "2 replica(s) × 1 CPU + read+decode tasks (0.5 CPU) do not fit the Ray cluster (2 node(s), 2 CPU" in lines[0]
    assert "use --num-cpus 0.5 or --replicas 1" in lines[0]
    print(f"stopped after {elapsed:.1f}s")  # figure for the report; no timed assertion on a shared machine
    assert not (tmp_path / "out" / "labels").exists()


def test_a_run_is_a_named_tagged_flow_run_with_its_log_lines_in_prefect(prefect_server, ray_local, tmp_path):
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from humantag.flows.config import RunConfig
    from humantag.flows.label_archive import run_label_archive
    from humantag.flows.listing import SourceSpec

    src, dest = tmp_path / "src", tmp_path / "out"
    _photos(src, 4)
    config = RunConfig(source=SourceSpec(url=str(src)), dest=str(dest), labeler="image-facts", shard_size=2)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_LOGGING_TO_API_ENABLED: True}):
        summary = run_label_archive(config)
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # send what is queued now
    assert summary.flow_run_url and summary.run_id.startswith("run-")
    flow_run_id = summary.flow_run_url.rstrip("/").rsplit("/", 1)[-1]

    import asyncio

    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        flow_run = asyncio.run(read())
    assert flow_run.name == summary.run_id
    assert {"humantag", "source:src", "labeler:image-facts", "mode:full"} <= set(flow_run.tags)

    logs = ""
    for _ in range(20):  # logs arrive in batches
        out = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "logs", flow_run_id],
                             capture_output=True, text=True, env=cli_env(prefect_server.env), timeout=60)
        logs = out.stdout
        if "planned run" in logs and "shard " in logs:
            break
        time.sleep(1)
    assert f"planned run {summary.run_id}: 4 objects to label in 2 shards" in logs, logs[-3000:]
    assert "labeler image-facts (chosen with --labeler)" in logs


def test_a_stalled_run_logs_what_ray_has_pending(ray_local):
    import logging

    import ray

    from humantag.flows import progress
    from humantag.flows.label_archive import StallWatch

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    @ray.remote(num_cpus=64)
    class TooBig:
        def ping(self) -> int:
            return 1

    lines = Lines()
    logger = logging.getLogger("humantag.flows.label_archive")
    logger.addHandler(lines)
    actor = TooBig.remote()  # can never be scheduled on this cluster: pending demand
    try:
        with StallWatch(progress.RunState(), after_s=0.4):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any("64.0" in line for line in lines.lines):
                time.sleep(0.2)  # the first warnings may come before Ray has registered the demand
    finally:
        ray.kill(actor)
        logger.removeHandler(lines)
    assert all(line.startswith("no batch finished for") for line in lines.lines), lines.lines
    assert "pending: 1 × {'CPU': 64.0}" in lines.lines[-1], lines.lines
