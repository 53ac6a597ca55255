"""`humantag deploy nightly` against a real Prefect server, run once through a process worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest

from tests.fixtures.cli import cli_env, run_cli

pytestmark = pytest.mark.slow


async def _deployment(name: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(f"label_archive/{name}")
        schedules = await client.read_deployment_schedules(deployment.id)
        return deployment, schedules


async def _flow_run_state(flow_run_id):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).state


def _png(value: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_nightly_deployment_of_an_s3_source_runs_through_a_process_worker(prefect_server, s3_server, ray_local_join_env,
                                                                          tmp_path, monkeypatch):
    bucket = s3_server.new_bucket("nightly")
    client = s3_server.client()
    for key in ("keep/0.png", "keep/1.png", "keep/2.png", "keep/thumbs/3.png", "other/4.png"):
        client.put_object(Bucket=bucket, Key=f"photos/{key}", Body=_png(len(key) * 9))
    dest = tmp_path / "out"
    # The worker has the credentials; the deployment must not store them.
    env = dict(prefect_server.env) | s3_server.env()
    result = run_cli("deploy", "nightly", f"s3://{bucket}/photos", "--out", "out", "--cron", "0 2 * * *",
                     "--include", "keep/*", "--exclude", "*/thumbs/*", "--shard-size", "2", "--shard-concurrency", "1",
                     "--name", "nightly-test", "--labeler", "image-facts", "--work-pool", "test-pool", env=env,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "label_archive/nightly-test" in result.stdout

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The environment alone is not enough in-process: if prefect was imported earlier in
    # this pytest process (any test that ran a flow), its settings are already loaded and
    # get_client() would talk to an ephemeral in-process server. Point this process's
    # client at the fixture's server explicitly, whatever the import order.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        deployment, schedules = asyncio.run(_deployment("nightly-test"))
        assert deployment.work_pool_name == "test-pool"
        assert [s.schedule.cron for s in schedules] == ["0 2 * * *"]
        stored = deployment.parameters["config"]
        assert stored["mode"] == "incremental" and stored["shard_concurrency"] == 1
        assert stored["source"]["include"] == ["keep/*"] and stored["source"]["exclude"] == ["*/thumbs/*"]
        assert stored["dest"] == str(dest)  # relative paths are resolved before they are stored
        assert stored["storage"]["secret"] is None and stored["storage"]["key"] is None
        assert stored["storage"]["endpoint_url"] == s3_server.endpoint

        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "label_archive/nightly-test"],
                             capture_output=True, text=True, env=cli_env(env), timeout=120)
        assert run.returncode == 0, run.stderr + run.stdout
        # As docs/deploy.md has it, the worker's environment names the Ray cluster (here: the suite's).
        worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-pool", "--run-once"],
                                capture_output=True, text=True, env=cli_env(env | ray_local_join_env), timeout=400)
        assert worker.returncode == 0, worker.stderr[-3000:]

        from prefect.client.orchestration import get_client

        async def runs():
            async with get_client() as client:
                return await client.read_flow_runs()

        deadline = time.monotonic() + 60
        states = []
        while time.monotonic() < deadline:
            flow_runs = asyncio.run(runs())
            states = [r.state.type.value for r in flow_runs]
            if states and all(s in ("COMPLETED", "FAILED", "CRASHED") for s in states):
                break
            time.sleep(1)
        (tmp_path / "worker.log").write_text(worker.stdout + worker.stderr)
        assert states == ["COMPLETED"], (states, (worker.stdout + worker.stderr)[-6000:])
        rows = ds.dataset(str(dest / "labels")).to_table().to_pylist()
        assert sorted(r["uri"] for r in rows) == [f"s3://{bucket}/photos/keep/{i}.png" for i in range(3)]
        assert all(r["run_id"].startswith("inc-") for r in rows)
        assert flow_runs[0].name == rows[0]["run_id"]  # the flow run is named after the run id
