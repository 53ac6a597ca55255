"""HumanVLM per image: the one-conversation path against the old two-pass path, same run, same images.

Counts per image: prefill tokens (real tokens fed in a prefill, padding excluded), and
as measured by a hook on the language model the positions its multi-token forwards
computed (padding included: what the GPU pays), generated tokens, vision-tower passes
(a forward hook on the vision tower counts images) and generate() calls (per batch,
divided by the batch's images), plus the share of schema-valid outputs and images/s.

The baseline is the path the labeler used before issue 10, kept here and only here:
caption and attributes as two independent prompts, each prefilling the system prompt
and the image, each running the vision tower.

Without --model it builds the tiny random checkpoint of the tests
(tests/fixtures/tiny_llava.py) with a 216 px vision tower, so an image is 27 x 27 =
729 image tokens as in HumanVLM, and runs it on the CPU. The tiny tokenizer spends
more tokens on text than Llama-3's, so the H100 projection at the end counts text
tokens from the prompts' characters (workers/labelers/humanvlm/cost.py).

    python bench/humanvlm_throughput.py --images 16 --batch-size 4
    python bench/humanvlm_throughput.py --model OpenFace-CQUPT/Human_LLaVA --images 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from humantag.workers.images import DecodedImage  # noqa: E402
from humantag.workers.labelers import LabelerOptions, LabelOutput, create_labeler  # noqa: E402
from humantag.workers.labelers.humanvlm import HumanVLMLabeler, cost, generation, prompts  # noqa: E402
from humantag.workers.labelers.humanvlm.schema import describe_fields  # noqa: E402

log = logging.getLogger("bench.humanvlm")
TINY_IMAGE_SIZE = 216  # / patch 8 = 27 x 27 = 729 image tokens, as SigLIP at 384 px / patch 14


def images(n: int, seed: int = 0) -> list[DecodedImage]:
    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (640, 480), (384, 384), (720, 1280)]
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        out.append(DecodedImage(uri=f"mem://{i}", width=w, height=h,
                                pixels=rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    return out


@dataclass
class Counts:
    images: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    vision_passes: int = 0
    generate_calls: int = 0
    lm_prefill_positions: int = 0  # measured by a hook, padding included
    valid: int = 0
    seconds: float = 0.0
    captions: list[str] = field(default_factory=list)

    def add_turn(self, turn: generation.TurnStats) -> None:
        self.prefill_tokens += turn.prefill_tokens
        self.generated_tokens += turn.generated_tokens


class Probe:
    """Counts what the model itself does: vision-tower images and generate() calls."""

    def __init__(self, lab: HumanVLMLabeler) -> None:
        self.model = lab._loaded.model
        self.vision_images = 0
        self.generate_calls = 0
        self.lm_prefill_positions = 0  # positions the language model computed in multi-token forwards
        self._hook = self.model.model.vision_tower.register_forward_hook(self._seen)
        self._lm_hook = self.model.model.language_model.register_forward_pre_hook(self._lm_forward, with_kwargs=True)
        self._generate = self.model.generate

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.generate_calls += 1
            return self._generate(*args, **kwargs)

        self.model.generate = counted

    def _seen(self, _module: Any, args: tuple, _out: Any) -> None:
        self.vision_images += int(args[0].shape[0])

    def _lm_forward(self, _module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] > 1:
            self.lm_prefill_positions += int(embeds.shape[0] * embeds.shape[1])

    def close(self) -> None:
        self._hook.remove()
        self._lm_hook.remove()
        self.model.generate = self._generate


def two_pass(lab: HumanVLMLabeler, batch: list[DecodedImage], counts: Counts) -> list[LabelOutput]:
    """The old path: caption prompt and attributes prompt, each with the image, two prefills."""
    loaded, constraint = lab._loaded, lab._constraint
    caption_prompt = prompts.chat(prompts.CAPTION_INSTRUCTION, loaded.image_token)
    attributes_prompt = prompts.chat(prompts.ATTRIBUTES_INSTRUCTION.format(fields=describe_fields(lab.spec)),
                                     loaded.image_token)
    caption = [generation.prepare(loaded, image, caption_prompt) for image in batch]
    attributes = [generation.prepare(loaded, image, attributes_prompt) for image in batch]
    pixels = [p.pixel_values for p in caption]
    said, _, turn = generation.start(loaded, [p.prompt_ids for p in caption], pixels, lab.settings.caption_max_new_tokens)
    counts.add_turn(turn)
    found, _, turn = generation.start(loaded, [p.prompt_ids for p in attributes], pixels, lab.attributes_max_new_tokens,
                                      constraint.logits_processor(), with_probabilities=True)
    counts.add_turn(turn)
    texts = [loaded.tokenizer.decode(g.token_ids, skip_special_tokens=True).strip() or None for g in said]
    return [lab.to_output(text, g) for text, g in zip(texts, found)]


def one_conversation(lab: HumanVLMLabeler, batch: list[DecodedImage], counts: Counts) -> list[LabelOutput]:
    before = (lab.stats.prompt_tokens, lab.stats.generated_tokens)
    outputs = lab.label(batch)
    counts.prefill_tokens += lab.stats.prompt_tokens - before[0]
    counts.generated_tokens += lab.stats.generated_tokens - before[1]
    return outputs


def measure(lab: HumanVLMLabeler, path: Callable[..., list[LabelOutput]], all_images: list[DecodedImage],
            batch_size: int) -> Counts:
    counts = Counts()
    probe = Probe(lab)
    try:
        for start in range(0, len(all_images), batch_size):
            batch = all_images[start:start + batch_size]
            started = time.perf_counter()
            outputs = path(lab, batch, counts)
            if lab._loaded.device.type == "cuda":
                torch.cuda.synchronize()
            counts.seconds += time.perf_counter() - started
            counts.images += len(batch)
            counts.valid += sum(o.error_kind is None and o.scene is not None for o in outputs)
            counts.captions += [o.caption or "" for o in outputs]
    finally:
        probe.close()
    counts.vision_passes, counts.generate_calls = probe.vision_images, probe.generate_calls
    counts.lm_prefill_positions = probe.lm_prefill_positions
    return counts


def tiny_variants(tmp: Path) -> list[tuple[str, str]]:
    """(name, checkpoint dir): the tests' tokenizer, and one whose text costs about what Llama-3's does."""
    from tests.fixtures.tiny_llava import build_tiny_llava
    from humantag.workers.labelers.humanvlm.schema import SchemaSpec

    corpus = (prompts.SYSTEM, prompts.CAPTION_INSTRUCTION, prompts.ATTRIBUTES_INSTRUCTION,
              describe_fields(SchemaSpec(sensitive_attributes=True)))
    return [
        ("tests' tokenizer: 384-token BPE", str(build_tiny_llava(tmp / "tiny-384", image_size=TINY_IMAGE_SIZE))),
        ("word-level tokenizer: BPE trained on the prompts", str(build_tiny_llava(
            tmp / "tiny-words", image_size=TINY_IMAGE_SIZE, tokenizer_vocab_size=4096, tokenizer_corpus=corpus))),
    ]


def compare(name: str, model: str, args: argparse.Namespace, cache_dir: str | None) -> HumanVLMLabeler:
    extra: dict[str, Any] = {"caption_max_new_tokens": args.caption_max_new_tokens, "max_persons": args.max_persons}
    if cache_dir:
        extra["cache_dir"] = cache_dir
    lab = create_labeler("humanvlm", LabelerOptions(model=model, batch_size=args.batch_size, device=args.device, extra=extra))
    assert isinstance(lab, HumanVLMLabeler)
    lab.setup()
    data = images(args.images)
    lab.label(images(min(args.batch_size, args.images), seed=1))  # warm-up
    rounds: dict[str, list[Counts]] = {"two-pass (old)": [], "one conversation": []}
    for _ in range(args.rounds):
        rounds["two-pass (old)"].append(measure(lab, two_pass, data, args.batch_size))
        rounds["one conversation"].append(measure(lab, one_conversation, data, args.batch_size))
    old, new = (runs[0] for runs in rounds.values())
    seconds = {label: float(np.median([c.seconds for c in runs])) for label, runs in rounds.items()}
    n = args.images
    text = prompts.SYSTEM + prompts.CAPTION_INSTRUCTION + describe_fields(lab.spec)
    chars_per_token = len(text) / len(lab._loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    print(f"\n{name} ({chars_per_token:.1f} characters per text token), {lab._loaded.model.config.vision_config.image_size} px "
          f"vision input, device {lab._loaded.device}")
    print(f"{'per image':<18} {'prefill tok':>11} {'(+padding)':>10} {'generated':>9} {'vision passes':>13} "
          f"{'generate()':>10} {'schema-valid':>12} {'img/s':>7}")
    for label, c in (("two-pass (old)", old), ("one conversation", new)):
        print(f"{label:<18} {c.prefill_tokens / n:11.1f} {c.lm_prefill_positions / n:10.1f} {c.generated_tokens / n:9.1f} "
              f"{c.vision_passes / n:13.2f} {c.generate_calls / n:10.3f} {100 * c.valid / n:11.0f}% {n / seconds[label]:7.2f}")
    print(f"new / old: prefill {new.prefill_tokens / old.prefill_tokens:.3f} (goal <= 0.7), generated "
          f"{new.generated_tokens / old.generated_tokens:.3f}, vision passes {new.vision_passes / old.vision_passes:.2f}, "
          f"images/s {seconds['two-pass (old)'] / seconds['one conversation']:.2f}x; captions identical to the old "
          f"caption pass: {sum(a == b for a, b in zip(old.captions, new.captions))}/{n}")
    return lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="hub id, local dir or s3:// URL (default: the tiny random test model)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of both paths; median times")
    parser.add_argument("--device", default=None)
    parser.add_argument("--caption-max-new-tokens", type=int, default=64)
    parser.add_argument("--max-persons", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"images={args.images} batch={args.batch_size} caption<={args.caption_max_new_tokens} tokens "
          f"max_persons={args.max_persons} rounds={args.rounds}; old and new path alternated on the same images")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            lab = compare(args.model, args.model, args, None)
        else:
            for name, model in tiny_variants(Path(tmp)):
                lab = compare(f"tiny random model, 729 image tokens, {name}", model, args, str(Path(tmp) / "cache"))
    projection(lab)


def projection(lab: HumanVLMLabeler) -> None:
    """Both paths on an H100 from token counts (text tokens from characters, as cost.py does)."""
    fields = describe_fields(lab.spec)
    ph = prompts.IMAGE_PLACEHOLDER
    caption_pass = cost.IMAGE_TOKENS + cost.text_tokens(prompts.chat(prompts.CAPTION_INSTRUCTION, ph))
    attributes_pass = cost.IMAGE_TOKENS + cost.text_tokens(prompts.chat(prompts.ATTRIBUTES_INSTRUCTION.format(fields=fields), ph))
    new = cost.image_cost(lab._build_prompts(ph), lab.spec, cost.CAPTION_TOKENS, lab.attributes_max_new_tokens)
    attributes = cost.attributes_tokens(lab.spec, lab.attributes_max_new_tokens)
    old = cost.ImageCost(caption_pass + attributes_pass, new.generated_tokens, 2,
                         cost.mean_context([(caption_pass, cost.CAPTION_TOKENS), (attributes_pass, attributes)]))
    print("\nprojected on one H100 (Llama-3-8B + SigLIP, 729 image tokens, ~4 characters per text token, "
          f"{new.generated_tokens:.0f} generated tokens per image):")
    for name, c in (("two-pass (old)", old), ("one conversation", new)):
        print(f"  {name:<18} prefill {c.prefill_tokens:6.0f} tok  {c.flops / 1e12:5.1f} TFLOP/image  "
              f"compute ceiling {c.compute_ceiling():5.1f} img/s  roofline at batch 16 {c.roofline(16):5.2f} img/s "
              f"(prefill {c.prefill_share(16):.0%} of it)")
    print(f"  issue's yardstick: ~74 img/s for an 8B model at ~800 tokens per image (13.3 TFLOP); "
          f"new/old FLOPs {new.flops / old.flops:.3f}")


if __name__ == "__main__":
    main()
