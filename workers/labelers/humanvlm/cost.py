"""What one image costs HumanVLM on a GPU, projected from its token counts (no GPU needed).

A batch's time is its prefill (compute-bound: 2 FLOPs per parameter per prompt token,
plus the vision tower per image patch) plus one decode step per generated token
(memory-bound at these batch sizes: each step reads the weights and the batch's KV
cache once). Token counts come from the prompts the labeler will send: image tokens
are the checkpoint's (729), text tokens are estimated from characters because the
Llama-3 tokenizer is not loaded on the driver. The figures are for one H100 SXM;
`bench/humanvlm_throughput.py --model ...` measures the real rate on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from humantag.workers.labelers.base import Throughput
from humantag.workers.labelers.humanvlm.prompts import IMAGE_PLACEHOLDER, Prompts
from humantag.workers.labelers.humanvlm.schema import SchemaSpec

LLM_PARAMS = 8.03e9  # Llama-3-8B
VISION_PARAMS = 0.43e9  # SigLIP so400m/14
WEIGHT_BYTES = 16.9e9  # bf16: LLM + vision tower + projector
KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2  # layers x KV heads x head dim x (K, V) x bf16
IMAGE_TOKENS = 729  # SigLIP at 384 px, patch 14: 27 x 27
CHARS_PER_TOKEN = 4.0  # Llama-3's 128k vocabulary on English prose (an estimate; JSON key lists are denser)
# Typical outputs, not bounds: a ~120-word caption; the JSON's fixed part plus ~120 tokens per person.
CAPTION_TOKENS = 160
ATTRIBUTES_BASE_TOKENS = 40
ATTRIBUTES_TOKENS_PER_PERSON = 120
TYPICAL_PERSONS = 2

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16
HBM_BYTES_PER_S = 3.35e12
PREFILL_EFFICIENCY = 0.5  # share of peak FLOP/s a batched prefill reaches
DECODE_EFFICIENCY = 0.7  # share of HBM bandwidth a decode step reaches


@dataclass(frozen=True)
class ImageCost:
    prefill_tokens: float  # per image
    generated_tokens: float
    vision_passes: int
    decode_context: float  # mean KV-cache length per sequence while decoding

    @property
    def flops(self) -> float:
        return 2 * LLM_PARAMS * (self.prefill_tokens + self.generated_tokens) + 2 * VISION_PARAMS * IMAGE_TOKENS * self.vision_passes

    def compute_ceiling(self) -> float:
        """Images/s if every FLOP ran at peak (the issue's yardstick: ~74 for 800 tokens)."""
        return PEAK_FLOPS / self.flops

    def batch_seconds(self, batch_size: int) -> tuple[float, float]:
        """(prefill, decode) seconds of one batch: prefill at PREFILL_EFFICIENCY of peak FLOP/s,
        each decode step reading the weights and the batch's KV cache at DECODE_EFFICIENCY of HBM."""
        prefill_s = batch_size * self.flops_prefill / (PEAK_FLOPS * PREFILL_EFFICIENCY)
        step_bytes = WEIGHT_BYTES + batch_size * self.decode_context * KV_BYTES_PER_TOKEN
        step_s = max(step_bytes / (HBM_BYTES_PER_S * DECODE_EFFICIENCY), 2 * LLM_PARAMS * batch_size / PEAK_FLOPS)
        return prefill_s, self.generated_tokens * step_s

    def roofline(self, batch_size: int) -> float:
        """Images/s of one replica."""
        return batch_size / sum(self.batch_seconds(batch_size))

    def prefill_share(self, batch_size: int) -> float:
        prefill_s, decode_s = self.batch_seconds(batch_size)
        return prefill_s / (prefill_s + decode_s)

    @property
    def flops_prefill(self) -> float:
        return 2 * LLM_PARAMS * self.prefill_tokens + 2 * VISION_PARAMS * IMAGE_TOKENS * self.vision_passes


def text_tokens(text: str) -> float:
    return len(text.replace(IMAGE_PLACEHOLDER, "")) / CHARS_PER_TOKEN


def attributes_tokens(spec: SchemaSpec, attributes_max_new_tokens: int) -> int:
    persons = min(TYPICAL_PERSONS, spec.max_persons)
    return min(ATTRIBUTES_BASE_TOKENS + ATTRIBUTES_TOKENS_PER_PERSON * persons, attributes_max_new_tokens)


def mean_context(turns: list[tuple[float, float]]) -> float:
    """Mean KV length over decode steps, from (context before the turn's answer, answer tokens) per turn."""
    steps = sum(answer for _, answer in turns)
    return sum(answer * (before + answer / 2) for before, answer in turns) / steps if steps else 0.0


def image_cost(prompts: Prompts, spec: SchemaSpec, caption_tokens: int, attributes_max_new_tokens: int) -> ImageCost:
    """One conversation per image: the image and both requests are prefilled once."""
    attributes = attributes_tokens(spec, attributes_max_new_tokens)
    first = IMAGE_TOKENS + text_tokens(prompts.first)
    if prompts.follow_up is None:
        return ImageCost(first, attributes, 1, mean_context([(first, attributes)]))
    follow_up = text_tokens(prompts.follow_up)
    context = mean_context([(first, caption_tokens), (first + caption_tokens + follow_up, attributes)])
    return ImageCost(first + follow_up, caption_tokens + attributes, 1, context)


def projected_throughput(prompts: Prompts, caption_max_new_tokens: Optional[int], spec: SchemaSpec,
                         attributes_max_new_tokens: int, batch_size: int) -> Throughput:
    """Images/s per GPU; `caption_max_new_tokens` None: no caption."""
    caption_tokens = min(CAPTION_TOKENS, caption_max_new_tokens) if caption_max_new_tokens else 0
    cost = image_cost(prompts, spec, caption_tokens, attributes_max_new_tokens)
    return Throughput(
        cost.roofline(batch_size), "GPU",
        f"projection, not a measurement (workers/labelers/humanvlm/cost.py): one H100 at batch {batch_size}, "
        f"~{cost.prefill_tokens:,.0f} prefill + ~{cost.generated_tokens:,.0f} generated tokens per image, decoding "
        f"bound by memory bandwidth; measure on your GPU with bench/humanvlm_throughput.py --model and pass --gpu-rate",
    )
