"""Which labeler `humantag run` uses when none is named."""

from __future__ import annotations

import ray

from humantag.workers.labelers import REGISTRY


def choose_default_labeler() -> tuple[str, str]:
    """(name, reason): HumanVLM behind the person gate when the cluster has a GPU, else the CPU labeler."""
    gpus = float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0
    if gpus > 0 and "gate" in REGISTRY:
        return "gate", f"the Ray cluster has {gpus:g} GPU(s): HumanVLM behind the person gate"
    if "cpu" in REGISTRY:
        return "cpu", "no GPU in the Ray cluster: CPU detectors"
    return "image-facts", "no GPU in the Ray cluster and no CPU detector labeler installed"
