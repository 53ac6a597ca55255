"""Start Ray locally, or join the cluster named by RAY_ADDRESS / --ray-address."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

import ray

from humantag.flows.ray_reaper import tied_to_this_process

log = logging.getLogger(__name__)

# For the local instance we start (no dashboard, nobody to query it after we exit): without these,
# the driver's exit waits ~15 s flushing metrics to an agent that takes none and task events to a
# state API nobody reads. A user who wants them sets the variables; a cluster we join is untouched.
LOCAL_INSTANCE_ENV = {
    "RAY_enable_metrics_collection": "0",
    "RAY_task_events_shutdown_flush_timeout_ms": "1000",
}


def ensure_ray(address: Optional[str] = None) -> dict[str, float]:
    """Idempotent; returns the cluster's resources (CPU, GPU, memory...)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or None
        if not target:
            for key, value in LOCAL_INSTANCE_ENV.items():
                os.environ.setdefault(key, value)
        handlers = _signal_handlers()
        with tied_to_this_process(enabled=not target):  # a killed driver leaves no Ray process behind
            ray.init(
                address=target,
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


def _signal_handlers() -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not None}
