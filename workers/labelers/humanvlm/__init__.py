"""HumanVLM labeler (OpenFace-CQUPT/Human_LLaVA): see docs/humanvlm.md.

Modules: loading (model sources, node cache, versions), model (device, dtype,
processor alignment), prompts (versioned), schema (JSON schema from
workers.attributes), constrained (xgrammar), generation (batching), confidence
(token probabilities -> per-attribute confidences), labeler (the Labeler).
"""

from humantag.workers.labelers.humanvlm.labeler import HumanVLMLabeler, HumanVLMSettings

__all__ = ["HumanVLMLabeler", "HumanVLMSettings"]
