"""Preparing images and prompts, and batched greedy generation with left padding.

Each image is prepared on its own (so one unusable image fails alone), then the
prepared inputs are collated into batches: prompts left-padded to a common length,
pixel tensors stacked (grouped by shape, for processors that keep aspect ratios).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import GenerationConfig, LogitsProcessor

from workers.images import DecodedImage
from workers.labelers.humanvlm.model import LoadedModel


@dataclass
class PreparedImage:
    pixel_values: torch.Tensor  # (1, C, H, W)
    caption_ids: torch.Tensor  # (L,)
    attributes_ids: torch.Tensor  # (L',)
    num_image_tokens: int


@dataclass
class Generated:
    token_ids: list[int]  # new tokens, stop/pad removed
    probabilities: Optional[list[float]]  # per token, under the processed (constrained) scores
    finished: bool  # ended with the stop token, not by max_new_tokens


def prepare(loaded: LoadedModel, image: DecodedImage, caption_prompt: str, attributes_prompt: str) -> PreparedImage:
    """Pixel values once per image; both prompts with the image token expanded as the processor does."""
    encoded = loaded.processor(images=[image.pil()], text=[caption_prompt], return_tensors="pt")
    caption_ids = encoded["input_ids"][0]
    count = int((caption_ids == loaded.image_token_id).sum())
    expanded = attributes_prompt.replace(loaded.image_token, loaded.image_token * count, 1)
    attributes_ids = loaded.tokenizer(expanded, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    return PreparedImage(encoded["pixel_values"], caption_ids, attributes_ids, count)


class ChosenTokenProbability(LogitsProcessor):
    """Wraps the constraint; records the probability of the greedy choice at every step.

    Under greedy decoding the chosen token is the argmax of the final scores, so its
    probability is the max of their softmax: computed here, one (batch,) vector a step,
    instead of keeping every step's full-vocabulary scores (GBs for a 128k vocab).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.inner is not None:
            scores = self.inner(input_ids, scores)
        self.steps.append(torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values)
        return scores


def _left_pad(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    return ids, mask


def generate(
    loaded: LoadedModel,
    prompts: list[torch.Tensor],
    pixel_values: list[torch.Tensor],
    max_new_tokens: int,
    logits_processor: Any = None,
    with_probabilities: bool = False,
) -> list[Generated]:
    """Greedy generation for one batch (all pixel tensors the same shape)."""
    ids, mask = _left_pad(prompts, loaded.pad_token_id)
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=[loaded.stop_token_id],
        pad_token_id=loaded.pad_token_id,
        return_dict_in_generate=True,
    )
    recorder = ChosenTokenProbability(logits_processor) if with_probabilities else None
    processors = [recorder] if recorder is not None else [logits_processor] if logits_processor is not None else None
    with torch.inference_mode():
        out = loaded.model.generate(
            input_ids=ids.to(loaded.device),
            attention_mask=mask.to(loaded.device),
            pixel_values=torch.cat(pixel_values).to(loaded.device, loaded.dtype),
            generation_config=config,
            logits_processor=processors,
        )
    new_tokens = out.sequences[:, ids.shape[1]:].cpu()
    probs = None
    if recorder is not None and recorder.steps:
        probs = torch.stack(recorder.steps, dim=1).exp().cpu()  # (batch, steps)
    results = []
    for row in range(new_tokens.shape[0]):
        tokens = new_tokens[row].tolist()
        finished = loaded.stop_token_id in tokens
        length = tokens.index(loaded.stop_token_id) if finished else len(tokens)
        results.append(
            Generated(
                token_ids=tokens[:length],
                probabilities=probs[row, :length].tolist() if probs is not None else None,
                finished=finished,
            )
        )
    return results
