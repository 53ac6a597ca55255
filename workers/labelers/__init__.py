"""Labeler registry: name -> class. Imports are lazy so `image-facts` never pulls in torch."""

from __future__ import annotations

import importlib

from workers.labelers.base import Labeler, LabelerOptions, LabelOutput, Placement

# name -> "module:Class"; later labelers register here.
REGISTRY: dict[str, str] = {
    "image-facts": "workers.labelers.image_facts:ImageFactsLabeler",
    "cpu": "workers.labelers.cpu:CpuLabeler",
    "gate": "workers.labelers.gate:GateLabeler",
}


def labeler_names() -> list[str]:
    return sorted(REGISTRY)


def create_labeler(name: str, options: LabelerOptions | None = None) -> Labeler:
    if name not in REGISTRY:
        raise ValueError(f"unknown labeler {name!r}; choose one of: {', '.join(labeler_names())}")
    module_name, class_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(options or LabelerOptions())


__all__ = ["Labeler", "LabelerOptions", "LabelOutput", "Placement", "REGISTRY", "create_labeler", "labeler_names"]
