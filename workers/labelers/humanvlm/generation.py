"""Preparing images and prompts, and batched greedy generation with left padding.

Each image is prepared on its own (so one unusable image fails alone), then the
prepared inputs are collated into batches: prompts left-padded to a common length,
pixel tensors stacked (grouped by shape, for processors that keep aspect ratios).

A batch is a `Conversation`: `start()` prefills the prompts (the vision tower runs
here, once per image) and generates the first answer; `reply()` appends the next
user turn and generates again from the KV cache, so only the new turn is prefilled.
Each row's first answer ends at a different step: its stop token and the padding
after it stay in the cache but are masked out, and the next turn (which begins
with its own stop token) takes the positions right after the row's last real token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import GenerationConfig, LogitsProcessor

from humantag.workers.images import DecodedImage
from humantag.workers.labelers.humanvlm.model import LoadedModel


@dataclass
class PreparedImage:
    pixel_values: torch.Tensor  # (1, C, H, W)
    prompt_ids: torch.Tensor  # (L,) the first turn, image token expanded
    num_image_tokens: int


@dataclass
class Generated:
    token_ids: list[int]  # new tokens, stop/pad removed
    probabilities: Optional[list[float]]  # per token, under the processed (constrained) scores
    finished: bool  # ended with the stop token, not by max_new_tokens


@dataclass
class Conversation:
    """A batch's token rows so far, which positions are real, and the KV cache behind them."""

    ids: torch.Tensor  # (B, W): left padding, turns, generated tokens
    mask: torch.Tensor  # (B, W): 1 where a real token is
    cache: Any  # transformers Cache: the keys and values of ids[:, :cache.get_seq_length()]


@dataclass
class TurnStats:
    """What one generate() call cost, for the benchmark and GenerationStats."""

    prefill_tokens: int  # real tokens prefilled (padding excluded)
    generated_tokens: int  # tokens generated, stop tokens included


def prepare(loaded: LoadedModel, image: DecodedImage, prompt: str) -> PreparedImage:
    """Pixel values and the first turn's ids, the image token expanded as the processor does."""
    encoded = loaded.processor(images=[image.pil()], text=[prompt], return_tensors="pt")
    prompt_ids = encoded["input_ids"][0]
    count = int((prompt_ids == loaded.image_token_id).sum())
    return PreparedImage(encoded["pixel_values"], prompt_ids, count)


def encode_text(loaded: LoadedModel, text: str) -> torch.Tensor:
    return loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]


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
    """Greedy generation for one batch (all pixel tensors the same shape), no follow-up."""
    return start(loaded, prompts, pixel_values, max_new_tokens, logits_processor, with_probabilities)[0]


def start(
    loaded: LoadedModel,
    prompts: list[torch.Tensor],
    pixel_values: list[torch.Tensor],
    max_new_tokens: int,
    logits_processor: Any = None,
    with_probabilities: bool = False,
) -> tuple[list[Generated], Conversation, TurnStats]:
    """Prefill image + first turn (left-padded), generate the first answer."""
    ids, mask = _left_pad(prompts, loaded.pad_token_id)
    before = Conversation(ids, mask, None)
    return _turn(loaded, before, torch.cat(pixel_values), max_new_tokens, logits_processor, with_probabilities)


def reply(
    loaded: LoadedModel,
    conversation: Conversation,
    turn: torch.Tensor,
    max_new_tokens: int,
    logits_processor: Any = None,
    with_probabilities: bool = False,
) -> tuple[list[Generated], Conversation, TurnStats]:
    """Append the same next turn (1-D ids) to every row and generate from the KV cache."""
    rows = conversation.ids.shape[0]
    ids = torch.cat([conversation.ids, turn.unsqueeze(0).expand(rows, -1)], dim=1)
    mask = torch.cat([conversation.mask, torch.ones((rows, len(turn)), dtype=torch.long)], dim=1)
    before = Conversation(ids, mask, conversation.cache)
    return _turn(loaded, before, None, max_new_tokens, logits_processor, with_probabilities)


def _turn(
    loaded: LoadedModel,
    before: Conversation,
    pixel_values: Optional[torch.Tensor],
    max_new_tokens: int,
    logits_processor: Any,
    with_probabilities: bool,
) -> tuple[list[Generated], Conversation, TurnStats]:
    ids, mask = before.ids, before.mask
    cached = before.cache.get_seq_length() if before.cache is not None else 0
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=[loaded.stop_token_id],
        pad_token_id=loaded.pad_token_id,
        return_dict_in_generate=True,
    )
    recorder = ChosenTokenProbability(logits_processor) if with_probabilities else None
    processors = [recorder] if recorder is not None else [logits_processor] if logits_processor is not None else None
    inputs: dict[str, Any] = {"input_ids": ids.to(loaded.device), "attention_mask": mask.to(loaded.device)}
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values.to(loaded.device, loaded.dtype)
    if before.cache is not None:
        inputs["cache"] = before.cache
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, generation_config=config, logits_processor=processors)
    new_tokens = out.sequences[:, ids.shape[1]:].cpu()
    probs = None
    if recorder is not None and recorder.steps:
        probs = torch.stack(recorder.steps, dim=1).exp().cpu()  # (batch, steps)
    results = []
    new_mask = torch.zeros_like(new_tokens)
    for row in range(new_tokens.shape[0]):
        tokens = new_tokens[row].tolist()
        finished = loaded.stop_token_id in tokens
        length = tokens.index(loaded.stop_token_id) if finished else len(tokens)
        new_mask[row, :length] = 1  # the stop token and the padding after it: masked for the next turn
        results.append(
            Generated(
                token_ids=tokens[:length],
                probabilities=probs[row, :length].tolist() if probs is not None else None,
                finished=finished,
            )
        )
    stats = TurnStats(
        prefill_tokens=int(mask[:, cached:].sum()),
        generated_tokens=sum(len(g.token_ids) + g.finished for g in results),
    )
    after = Conversation(out.sequences.cpu(), torch.cat([mask, new_mask], dim=1), out.cache)
    return results, after, stats
