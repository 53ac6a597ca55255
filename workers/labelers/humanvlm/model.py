"""Load HumanVLM (LlavaForConditionalGeneration + LlavaProcessor) onto the actor's device.

The image-token layout is read from the checkpoint, not assumed: SigLIP has no CLS
token, so the number of image tokens (e.g. 729 or 728 at 384 px) depends on the
processor's `num_additional_image_tokens` and the model's
`vision_feature_select_strategy`. The model config is authoritative (it decides
how many features the projector emits); the processor is aligned to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch

from humantag.workers.labelers.humanvlm.loading import ResolvedModel
from humantag.workers.labelers.humanvlm.prompts import EOT

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    model: Any  # LlavaForConditionalGeneration
    processor: Any  # LlavaProcessor
    device: torch.device
    dtype: torch.dtype
    image_token: str
    image_token_id: int
    stop_token_id: int
    pad_token_id: int
    vocab_size: int  # logits width (may exceed len(tokenizer))

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


def choose_device(requested: Optional[str]) -> torch.device:
    """Called inside the actor: CUDA when this process sees one (Ray sets CUDA_VISIBLE_DEVICES)."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_dtype(device: torch.device, requested: Optional[str]) -> torch.dtype:
    if requested:
        return DTYPES[requested]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load(resolved: ResolvedModel, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    kwargs: dict[str, Any] = {"revision": resolved.revision} if resolved.revision else {}
    processor = AutoProcessor.from_pretrained(resolved.path, **kwargs)
    model = LlavaForConditionalGeneration.from_pretrained(resolved.path, dtype=dtype, **kwargs)
    model.to(device).eval()
    _align_processor(processor, model.config)
    tokenizer = processor.tokenizer
    stop = tokenizer.convert_tokens_to_ids(EOT)
    if stop is None or stop == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer of {resolved.path} has no {EOT} token: not a Llama-3 chat checkpoint")
    pad = tokenizer.pad_token_id
    if pad is None:
        # Llama-3 ships no pad token; any id works under the attention mask.
        pad = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
        pad = stop if pad is None or pad == tokenizer.unk_token_id else pad
        tokenizer.pad_token_id = pad
    tokenizer.padding_side = "left"
    image_token_id = model.config.image_token_id
    image_token = tokenizer.convert_ids_to_tokens(image_token_id)
    if image_token != processor.image_token:
        raise ValueError(
            f"processor image token {processor.image_token!r} != model image token id {image_token_id} ({image_token!r})"
        )
    return LoadedModel(
        model=model, processor=processor, device=device, dtype=dtype,
        image_token=image_token, image_token_id=image_token_id, stop_token_id=stop, pad_token_id=pad,
        vocab_size=model.config.text_config.vocab_size,
    )


def _align_processor(processor: Any, config: Any) -> None:
    strategy = config.vision_feature_select_strategy
    if processor.vision_feature_select_strategy != strategy:
        log.warning(
            "processor vision_feature_select_strategy=%r disagrees with the model's %r; using the model's",
            processor.vision_feature_select_strategy, strategy,
        )
        processor.vision_feature_select_strategy = strategy
    if processor.patch_size is None:
        processor.patch_size = config.vision_config.patch_size
