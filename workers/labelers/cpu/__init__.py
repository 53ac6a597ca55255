"""The `cpu` labeler: persons, faces, smiles, clothing colour and quality from OpenCV's shipped detectors."""

from humantag.workers.labelers.cpu.labeler import CpuLabeler

__all__ = ["CpuLabeler"]
