"""Suite-wide settings. Fixtures for real servers live in tests/fixtures/ as plugins."""

import atexit
import os
import shutil
import tempfile

# Before any import of prefect or ray: no telemetry, no server, no network.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# humantag loggers carry a Prefect API handler once a flow ran in-process; lines outside a flow run are fine.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
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
