"""HumanVLM: captions and schema-valid human attributes with confidences, one replica per actor."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from humantag.workers.attributes import Person, PersonConfidence, Scene
from humantag.workers.images import DecodedImage
from humantag.workers.labelers.base import Labeler, LabelerIdentity, LabelerOptions, LabelOutput, Placement, Throughput
from humantag.workers.labelers.humanvlm import cost, generation, loading, model
from humantag.workers.labelers.humanvlm.confidence import TokenProbabilities, confidences, value_spans
from humantag.workers.labelers.humanvlm.constrained import JsonConstraint
from humantag.workers.labelers.humanvlm.prompts import IMAGE_PLACEHOLDER, Prompts, build_prompts
from humantag.workers.labelers.humanvlm.schema import SchemaSpec, attributes_schema, describe_fields, persons_within, token_bound

log = logging.getLogger(__name__)


class HumanVLMSettings(BaseModel):
    """HumanVLM's knobs: `LabelerOptions.extra` (CLI: --labeler-option KEY=VALUE)."""

    model_config = ConfigDict(extra="forbid")
    gpus_per_replica: float = Field(default=1.0, ge=0.0)  # 0.5: two replicas share a GPU
    cpus_per_replica: float = Field(default=1.0, gt=0.0)
    caption_max_new_tokens: int = Field(default=192, ge=1)
    max_persons: int = Field(default=8, ge=0, le=64)
    max_accessories: int = Field(default=4, ge=0, le=12)
    action_max_chars: int = Field(default=40, ge=1, le=80)
    # None: the schema's worst case, so the JSON always completes. Smaller: fewer persons fit.
    attributes_max_new_tokens: Optional[int] = Field(default=None, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    dtype: Optional[Literal["bfloat16", "float16", "float32"]] = None
    cache_dir: Optional[str] = None
    caption: bool = True

    @classmethod
    def from_options(cls, options: LabelerOptions) -> "HumanVLMSettings":
        return cls.model_validate(options.extra)


@dataclass
class GenerationStats:
    """Counters since setup: what the benchmark and the run summary report."""

    images: int = 0
    prompt_tokens: int = 0  # real tokens prefilled (padding and the KV cache's reuse excluded)
    generated_tokens: int = 0
    generate_calls: int = 0

    def add(self, turn: generation.TurnStats) -> None:
        self.prompt_tokens += turn.prefill_tokens
        self.generated_tokens += turn.generated_tokens
        self.generate_calls += 1


class HumanVLMLabeler(Labeler):
    name = "humanvlm"
    # SigLIP looks at 384 px: no point shipping full-size photos to the actor.
    decode_max_side: ClassVar[Optional[int]] = 768

    def __init__(self, options: LabelerOptions | None = None) -> None:
        super().__init__(options)
        self.settings = HumanVLMSettings.from_options(self.options)
        self.source = loading.ModelSource.parse(self.options.model or loading.DEFAULT_MODEL)
        self.spec = self._schema_spec()
        self.json_schema = attributes_schema(self.spec)
        self._resolved: Optional[loading.ResolvedModel] = None
        self._identity: Optional[LabelerIdentity] = None
        self._loaded: Optional[model.LoadedModel] = None
        self._constraint: Optional[JsonConstraint] = None
        self._prompts: Optional[Prompts] = None
        self._follow_up_ids: Optional[Any] = None
        self.stats = GenerationStats()

    def _schema_spec(self) -> SchemaSpec:
        s = self.settings
        spec = SchemaSpec(self.options.sensitive_attributes, s.max_persons, s.max_accessories, s.action_max_chars)
        if s.attributes_max_new_tokens is not None:
            spec = SchemaSpec(spec.sensitive_attributes, persons_within(spec, s.attributes_max_new_tokens),
                              spec.max_accessories, spec.action_max_chars)
        return spec

    @property
    def attributes_max_new_tokens(self) -> int:
        return self.settings.attributes_max_new_tokens or token_bound(self.spec)

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.cache_dir) if self.settings.cache_dir else loading.default_cache_dir()

    @property
    def caption_max_new_tokens(self) -> Optional[int]:
        """None: no caption turn."""
        return self.settings.caption_max_new_tokens if self.settings.caption else None

    def _build_prompts(self, image_token: str) -> Prompts:
        return build_prompts(image_token, describe_fields(self.spec), self.json_schema, self.caption_max_new_tokens)

    @property
    def prompt_version(self) -> str:
        return self._build_prompts(IMAGE_PLACEHOLDER).version

    def identity(self) -> LabelerIdentity:
        """Weights identified without loading or copying them (loading.identify), once per object."""
        if self._identity is None:
            version = self._resolved.version if self._resolved else loading.identify(self.source, self.cache_dir)
            self._identity = LabelerIdentity(version, self.prompt_version)
        return self._identity

    def throughput(self) -> Throughput:
        return cost.projected_throughput(self._build_prompts(IMAGE_PLACEHOLDER), self.caption_max_new_tokens, self.spec,
                                         self.attributes_max_new_tokens, self.options.batch_size)

    def default_placement(self) -> Placement:
        gpus = 0.0 if (self.options.device or "").startswith("cpu") else self.settings.gpus_per_replica
        return Placement(num_cpus=self.settings.cpus_per_replica, num_gpus=gpus)

    def run_info(self) -> dict[str, Any]:
        info = super().run_info()
        info.update(
            model=self.options.model or loading.DEFAULT_MODEL,
            max_persons=self.spec.max_persons,
            attributes_max_new_tokens=self.attributes_max_new_tokens,
            caption_max_new_tokens=self.settings.caption_max_new_tokens,
            batch_size=self.options.batch_size,
        )
        info["prompt_version"] = self.prompt_version
        if self._loaded is not None:
            info.update(device=str(self._loaded.device), dtype=str(self._loaded.dtype).removeprefix("torch."))
        return info

    def setup(self) -> None:
        if self._loaded is not None:
            return
        device = model.choose_device(self.options.device)
        dtype = model.choose_dtype(device, self.settings.dtype)
        # Where the actor runs: the node-cache copy or content hash; its identity is the rows' truth.
        self._resolved = loading.resolve(self.source, self.cache_dir)
        self._identity = None
        started = time.perf_counter()
        self._loaded = model.load(self._resolved, device, dtype)
        self._constraint = JsonConstraint(self._loaded, self.json_schema)
        self._prompts = self._build_prompts(self._loaded.image_token)
        if self._prompts.follow_up is not None:
            self._follow_up_ids = generation.encode_text(self._loaded, self._prompts.follow_up)
        log.info(
            "humanvlm %s loaded on %s (%s) in %.1fs; prompts %s",
            self._resolved.version, device, dtype, time.perf_counter() - started, self._prompts.version,
        )

    # ---- labeling ---------------------------------------------------------------------------

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        self.setup()
        outputs: list[LabelOutput] = []
        size = max(1, self.options.batch_size)
        for start in range(0, len(images), size):
            outputs.extend(self._label_batch(images[start:start + size]))
        return outputs

    def _label_batch(self, images: list[DecodedImage]) -> list[LabelOutput]:
        loaded, prompts = self._loaded, self._prompts
        assert loaded is not None and prompts is not None
        started = time.perf_counter()
        results: list[Optional[LabelOutput]] = [None] * len(images)
        prepared: dict[int, generation.PreparedImage] = {}
        for i, image in enumerate(images):
            failure = self._check_size(image)
            if failure:
                results[i] = failure
                continue
            try:
                prepared[i] = generation.prepare(loaded, image, prompts.first)
            except Exception as exc:  # noqa: BLE001 - one unusable image is one error row
                results[i] = LabelOutput.failed("preprocess_error", f"{type(exc).__name__}: {exc}")
        # Same-shape pixel tensors generate together; a failing group retries image by image.
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, prep in prepared.items():
            groups[tuple(prep.pixel_values.shape)].append(i)
        for indices in groups.values():
            for i, output in zip(indices, self._generate_group(indices, prepared)):
                results[i] = output
        elapsed_ms = (time.perf_counter() - started) * 1000 / max(1, len(images))
        final = []
        for output in results:
            assert output is not None
            output.label_ms = elapsed_ms
            output.prompt_version = prompts.version
            final.append(output)
        return final

    def _check_size(self, image: DecodedImage) -> Optional[LabelOutput]:
        pixels = image.pixels
        assert pixels is not None
        if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
            return LabelOutput.failed("preprocess_error", f"expected HxWx3 RGB pixels, got shape {pixels.shape}")
        if pixels.shape[0] * pixels.shape[1] > self.settings.max_image_pixels:
            return LabelOutput.failed(
                "too_large",
                f"{pixels.shape[1]}x{pixels.shape[0]} pixels exceeds max_image_pixels={self.settings.max_image_pixels}",
            )
        return None

    def _generate_group(self, indices: list[int], prepared: dict[int, generation.PreparedImage]) -> list[LabelOutput]:
        try:
            return self._generate([prepared[i] for i in indices])
        except Exception as exc:  # noqa: BLE001 - find the image that breaks the batch
            if len(indices) == 1:
                log.warning("generation failed for one image: %s", exc)
                return [LabelOutput.failed("generation_error", f"{type(exc).__name__}: {exc}")]
            log.warning("generation failed for a batch of %d (%s); retrying one by one", len(indices), exc)
            return [out for i in indices for out in self._generate_group([i], prepared)]

    def _generate(self, batch: list[generation.PreparedImage]) -> list[LabelOutput]:
        """One conversation per image: the caption, then the attributes from the same KV cache.

        The vision tower and the image's prefill run once (in `start`); the attributes
        turn prefills only its own request. Without a caption, the attributes are the first turn.
        """
        loaded, constraint = self._loaded, self._constraint
        assert loaded is not None and constraint is not None
        prompts = [p.prompt_ids for p in batch]
        pixels = [p.pixel_values for p in batch]
        constrained = {"logits_processor": constraint.logits_processor(), "with_probabilities": True}
        captions: list[Optional[str]] = [None] * len(batch)
        if self._follow_up_ids is None:
            attributes, _, turn = generation.start(loaded, prompts, pixels, self.attributes_max_new_tokens, **constrained)
            self.stats.add(turn)
        else:
            said, conversation, turn = generation.start(loaded, prompts, pixels, self.settings.caption_max_new_tokens)
            self.stats.add(turn)
            captions = [loaded.tokenizer.decode(g.token_ids, skip_special_tokens=True).strip() or None for g in said]
            attributes, _, turn = generation.reply(
                loaded, conversation, self._follow_up_ids, self.attributes_max_new_tokens, **constrained
            )
            self.stats.add(turn)
        self.stats.images += len(batch)
        return [self.to_output(caption, g) for caption, g in zip(captions, attributes)]

    def to_output(self, caption: Optional[str], generated: generation.Generated) -> LabelOutput:
        constraint = self._constraint
        assert constraint is not None and generated.probabilities is not None
        pieces = [constraint.token_bytes[t].decode("utf-8", errors="replace") for t in generated.token_ids]
        tokens = TokenProbabilities(pieces, generated.probabilities)
        if not generated.finished:
            return LabelOutput.failed(
                "invalid_output",
                f"attribute JSON cut at attributes_max_new_tokens={self.attributes_max_new_tokens}: {tokens.text[-200:]}",
            )
        try:
            parsed = json.loads(tokens.text)
            spans = value_spans(tokens.text)
            scene_conf, person_conf = confidences(tokens, spans, parsed)
            persons = [
                Person(**attrs, confidence=PersonConfidence(**conf))
                for attrs, conf in zip(parsed["persons"], person_conf)
            ]
            scene = Scene(**parsed["scene"], **{f"{k}_confidence": v for k, v in scene_conf.items()})
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return LabelOutput.failed("invalid_output", f"{type(exc).__name__}: {exc}; output: {tokens.text[:500]}")
        return LabelOutput(
            caption=caption,
            people_count=parsed["people_count"],
            faces_visible=sum(1 for p in persons if p.face_visible),
            persons=persons,
            scene=scene,
        )
