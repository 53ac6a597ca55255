"""Start Ray locally, or join the cluster named by RAY_ADDRESS / --ray-address."""

from __future__ import annotations

import logging
import os
from typing import Optional

import ray

from flows.ray_reaper import tied_to_this_process

log = logging.getLogger(__name__)


def ensure_ray(address: Optional[str] = None) -> dict[str, float]:
    """Idempotent; returns the cluster's resources (CPU, GPU, memory...)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or None
        with tied_to_this_process(enabled=not target):  # a killed driver leaves no Ray process behind
            ray.init(
                address=target,
                include_dashboard=False,
                log_to_driver=True,
                configure_logging=False,
                ignore_reinit_error=True,
            )
        log.info("ray: %s", f"joined cluster at {target}" if target else "started a local instance")
    return dict(ray.cluster_resources())
