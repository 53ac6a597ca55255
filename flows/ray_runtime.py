"""Start Ray locally, or join the cluster named by RAY_ADDRESS / --ray-address."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

import ray
from ray._common.utils import env_bool
from ray._private import ray_constants

from humantag.flows.ray_reaper import tied_to_this_process

log = logging.getLogger(__name__)

# For the local instance we start (no dashboard, nobody to query it after we exit): without the
# first two, the driver's exit waits ~15 s flushing metrics to an agent that takes none and task
# events to a state API nobody reads. The third makes it a one-machine instance: Ray takes
# 127.0.0.1 as the node's address, so its GCS, raylet and workers listen on loopback only (on
# Linux they otherwise listen on every interface). A user who wants otherwise sets the
# variables; a cluster we join is untouched.
LOCAL_INSTANCE_ENV = {
    "RAY_enable_metrics_collection": "0",
    "RAY_task_events_shutdown_flush_timeout_ms": "1000",
    ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0",  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
}


def ensure_ray(address: Optional[str] = None) -> dict[str, float]:
    """Idempotent; returns the cluster's resources (CPU, GPU, memory...)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or None
        if not target:
            apply_local_instance_env()
        handlers = _signal_handlers()
        with tied_to_this_process(enabled=not target):  # a killed driver leaves no Ray process behind
            ray.init(
                # "local": a new instance even where another one on this machine is Ray's "current" cluster
                address=target or "local",
                include_dashboard=False,
                log_to_driver=True,
                configure_logging=False,
                ignore_reinit_error=True,
            )
        # ray.init makes SIGTERM call sys.exit in the driver; whoever runs us (our CLI, Prefect) decides instead.
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        log.info("ray: %s", f"joined cluster at {target}" if target else "started a local instance")
    return dict(ray.cluster_resources())


def apply_local_instance_env() -> None:
    """LOCAL_INSTANCE_ENV, where the user has not set the variable, for a local instance about to start."""
    for key, value in LOCAL_INSTANCE_ENV.items():
        os.environ.setdefault(key, value)
    # Ray reads this variable once, into a constant, when it is imported, which the driver has done by
    # now; the processes it starts read the variable. tests/test_loopback_only.py checks the outcome.
    ray_constants.ENABLE_RAY_CLUSTER = env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, True)


def _signal_handlers() -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None}
