"""Suite-wide settings. Fixtures for real servers live in tests/fixtures/ as plugins."""

import atexit
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator

import pytest

from humantag.flows.runtime import apply_default_environment

# Before any import of prefect or ray: the CLI's own defaults (no telemetry, quiet), and no hub.
apply_default_environment()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A Prefect home of the suite's own: its sqlite database is not shared with
# other Prefect processes on the machine (concurrent writers lock it).
if "PREFECT_HOME" not in os.environ:
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="humantag-prefect-")
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.ray_cluster",
    "tests.fixtures.devset",
    "tests.fixtures.prefect_server",
    "tests.fixtures.tiny_llava",
    "tests.fixtures.opensearch",
]


@pytest.fixture(autouse=True)
def _keep_pytests_signal_handlers() -> Iterator[None]:
    """Tests that call the CLI's command() in this process get its Ctrl-C handlers (which end the
    process once a command is done); Ctrl-C must still stop pytest with its summary afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
