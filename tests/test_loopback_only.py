"""The servers the suite starts, and those a default run starts, listen on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from humantag.flows.ray_runtime import LOCAL_INSTANCE_ENV
from tests.fixtures.cli import cli_env
from tests.fixtures.sockets import Listener, listeners

pytestmark = pytest.mark.slow


def _not_loopback(found) -> list[str]:
    return [f"{x.command} (pid {x.pid}) on {x.host}:{x.port}" for x in found if not x.loopback]


def test_the_suites_servers_listen_on_loopback_only(ray_local, s3_server, search_cluster, prefect_server):
    found = listeners(os.getpid())
    commands = {x.command for x in found}
    # The walk over /proc must see the servers at all, or the check below checks nothing.
    assert {"gcs_server", "raylet", "weed"} <= commands, sorted(commands)
    assert not _not_loopback(found)


def test_a_default_run_listens_on_loopback_only(tmp_path):
    """A run as on a fresh machine (no RAY_ADDRESS, no PREFECT_API_URL): its local Ray and Prefect's
    temporary server, sampled while it runs."""
    import numpy as np
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.fromarray(np.full((30, 40, 3), i * 40, np.uint8)).save(src / f"{i}.png")
    # Unset, not empty: an empty RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER already reads as "one machine" to Ray.
    env = {k: v for k, v in cli_env().items() if k not in (*LOCAL_INSTANCE_ENV, "RAY_ADDRESS", "PREFECT_API_URL")}
    proc = subprocess.Popen([sys.executable, "-m", "humantag.flows.cli", "run", str(src), "--out", str(tmp_path / "out"),
                             "--labeler", "image-facts", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    seen: set[Listener] = set()
    try:
        while proc.poll() is None:
            seen |= set(listeners(proc.pid))
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert {"gcs_server", "raylet"} <= {x.command for x in seen}, seen  # the sampling saw the run's servers
    assert not _not_loopback(seen)
