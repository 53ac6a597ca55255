"""The servers the suite starts, and the Ray instance the CLI starts by default, listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from humantag.flows.ray_runtime import LOCAL_INSTANCE_ENV
from tests.fixtures.cli import cli_env
from tests.fixtures.sockets import Listener, listeners

# What the CLI does on a machine with no RAY_ADDRESS: start a local Ray, then report what its processes listen on.
_START_LOCAL_RAY = """
import dataclasses, json, os
from humantag.flows.ray_runtime import ensure_ray
from tests.fixtures.sockets import listeners
ensure_ray()
print(json.dumps([dataclasses.asdict(found) for found in listeners(os.getpid())]))
"""


def _not_loopback(found) -> list[str]:
    return [f"{x.command} (pid {x.pid}) on {x.host}:{x.port}" for x in found if not x.loopback]


def test_the_suites_servers_listen_on_loopback_only(ray_local, s3_server, search_cluster, prefect_server):
    found = listeners(os.getpid())
    commands = {x.command for x in found}
    # The walk over /proc must see the servers at all, or the check below checks nothing.
    assert {"gcs_server", "raylet", "weed"} <= commands, sorted(commands)
    assert not _not_loopback(found)


def test_the_clis_local_ray_listens_on_loopback_only():
    env = {k: v for k, v in cli_env().items() if k not in LOCAL_INSTANCE_ENV and k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", _START_LOCAL_RAY], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    found = [Listener(**x) for x in json.loads(result.stdout.strip().splitlines()[-1])]
    assert {"gcs_server", "raylet"} <= {x.command for x in found}, found
    assert not _not_loopback(found)
