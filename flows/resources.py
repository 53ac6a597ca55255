"""Does the replica pool fit the Ray cluster? Checked before any work starts, node by node.

Each replica is an actor holding `num_cpus`/`num_gpus`; read+decode tasks need
`decode_cpus` beside them. If no node has room for a decode task once the replicas
are placed, Ray would wait forever: we say so in one line instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Optional

from humantag.flows.config import PoolConfig
from humantag.flows.errors import UserError
from humantag.workers.labelers.base import Placement

log = logging.getLogger("humantag.resources")

# When --num-cpus is not given, a replica may get this fraction of the labeler's own CPUs, largest first.
_CPU_SHARES = (1.0, 0.75, 0.5, 0.25)


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each live node (ray.nodes()); Ray must be initialised."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def local_node() -> list[dict[str, float]]:
    """What a Ray started here would have, known before starting it (cgroup limits included)."""
    try:
        from ray._private.utils import get_num_cpus

        cpus = float(get_num_cpus())
    except Exception:  # noqa: BLE001 - Ray's helper moved: count the CPUs we may run on
        cpus = float(len(os.sched_getaffinity(0)))
    return [{"CPU": cpus}]


def fits(nodes: Sequence[Mapping[str, float]], replicas: int, cpus: float, gpus: float, decode_cpus: float) -> bool:
    """Place the replicas where most CPU is left, then ask for room for one read+decode task."""
    free = [[float(n.get("CPU", 0.0)), float(n.get("GPU", 0.0))] for n in nodes]
    for _ in range(replicas):
        candidates = [f for f in free if f[0] >= cpus - 1e-9 and f[1] >= gpus - 1e-9]
        if not candidates:
            return False
        best = max(candidates, key=lambda f: (f[0], f[1]))
        best[0] -= cpus
        best[1] -= gpus
    return any(f[0] >= decode_cpus - 1e-9 for f in free)


def fit_pool(pool: PoolConfig, labeler_default: Placement, nodes: Sequence[Mapping[str, float]]) -> Placement:
    """The per-replica placement to use, or a UserError saying what does not fit and how to fix it."""
    gpus = pool.num_gpus if pool.num_gpus is not None else labeler_default.num_gpus
    shares = (pool.num_cpus,) if pool.num_cpus is not None else tuple(labeler_default.num_cpus * s for s in _CPU_SHARES)
    for cpus in shares:
        if fits(nodes, pool.replicas, cpus, gpus, pool.decode_cpus):
            if pool.num_cpus is None and cpus != labeler_default.num_cpus:
                log.info("%d replicas get %g CPU each (the labeler asks for %g) to fit the cluster",
                         pool.replicas, cpus, labeler_default.num_cpus)
            return Placement(num_cpus=cpus, num_gpus=gpus)
    raise UserError(_advice(pool, shares[0], gpus, nodes))


def _advice(pool: PoolConfig, cpus: float, gpus: float, nodes: Sequence[Mapping[str, float]]) -> str:
    total_cpu = sum(float(n.get("CPU", 0.0)) for n in nodes)
    total_gpu = sum(float(n.get("GPU", 0.0)) for n in nodes)
    largest = max((float(n.get("CPU", 0.0)) for n in nodes), default=0.0)
    need = f"{pool.replicas} replica(s) × {cpus:g} CPU" + (f" × {gpus:g} GPU" if gpus else "")
    have = f"{len(nodes)} node(s), {total_cpu:g} CPU (largest node {largest:g})" + (f", {total_gpu:g} GPU" if total_gpu else "")
    fixes: list[str] = []
    if gpus and not fits(nodes, 1, 0.0, gpus, 0.0):
        fixes.append("--num-gpus 0 with a CPU labeler (--labeler cpu), or a cluster with GPUs")
    else:
        smaller = _largest_fitting_cpus(nodes, pool.replicas, gpus, pool.decode_cpus, below=cpus)
        if smaller is not None:
            fixes.append(f"--num-cpus {smaller:g}")
        fewer = next((r for r in range(pool.replicas - 1, 0, -1) if fits(nodes, r, cpus, gpus, pool.decode_cpus)), None)
        if fewer is not None:
            fixes.append(f"--replicas {fewer}")
        if not fixes:
            fixes.append("a larger Ray cluster (--ray-address)")
    return (f"{need} + read+decode tasks ({pool.decode_cpus:g} CPU) do not fit the Ray cluster ({have}); "
            f"use {' or '.join(fixes)}")


def _largest_fitting_cpus(nodes: Sequence[Mapping[str, float]], replicas: int, gpus: float, decode_cpus: float,
                          below: float) -> Optional[float]:
    step = 0.05
    cpus = round(below - step, 2)
    while cpus >= step - 1e-9:
        if fits(nodes, replicas, cpus, gpus, decode_cpus):
            return cpus
        cpus = round(cpus - step, 2)
    return None


def pending_demand() -> str:
    """What Ray says is waiting for resources (as `ray status` shows it), and what is free."""
    import ray

    parts: list[str] = []
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        demands = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5).resource_demands
        for demand in demands.ray_task_actor_demand:
            for request in demand.bundles_by_count:
                parts.append(f"{request.count} × {dict(request.bundle)}")
    except Exception as exc:  # noqa: BLE001 - diagnostics only: say why it is missing
        parts.append(f"(pending demand unavailable: {type(exc).__name__})")
    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
    return f"pending: {', '.join(parts) or 'nothing'}; free: {free}"
