"""Labeler registry: name -> class. Imports are lazy so `image-facts` never pulls in torch."""

from __future__ import annotations

import importlib

from humantag.workers.labelers.base import Labeler, LabelerIdentity, LabelerOptions, LabelOutput, Placement, Throughput

# name -> "module:Class"; later labelers register here.
REGISTRY: dict[str, str] = {
    "image-facts": "humantag.workers.labelers.image_facts:ImageFactsLabeler",
    "cpu": "humantag.workers.labelers.cpu:CpuLabeler",
    "gate": "humantag.workers.labelers.gate:GateLabeler",
    "humanvlm": "humantag.workers.labelers.humanvlm:HumanVLMLabeler",
}

# name -> its documentation: what it fills and what it leaves empty (shown when a search finds nothing).
DOCS: dict[str, str] = {
    "image-facts": "README.md#labeling-an-archive",
    "cpu": "docs/cpu-labeler.md",
    "gate": "docs/cpu-labeler.md",
    "humanvlm": "docs/humanvlm.md",
}


def labeler_doc(name: str) -> str | None:
    return DOCS.get(name)


def labeler_names() -> list[str]:
    return sorted(REGISTRY)


def is_known_labeler(name: str) -> bool:
    """A registered name, or a plug-in given as "package.module:Class"."""
    return name in REGISTRY or (":" in name and all(name.split(":", 1)))


def create_labeler(name: str, options: LabelerOptions | None = None) -> Labeler:
    if not is_known_labeler(name):
        raise ValueError(f"unknown labeler {name!r}; choose one of: {', '.join(labeler_names())}, or module:Class")
    module_name, class_name = REGISTRY.get(name, name).split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(options or LabelerOptions())


__all__ = ["Labeler", "LabelerIdentity", "LabelerOptions", "LabelOutput", "Placement", "REGISTRY", "Throughput", "create_labeler", "is_known_labeler", "labeler_doc", "labeler_names"]
