"""HumanVLM on a tiny random Llava built at test time, through the production code path (CPU)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import xgrammar as xgr
from pydantic import ValidationError

from humantag.workers.actors import LabelerPool, LabelerReplica
from humantag.workers.attributes import SENSITIVE_PERSON_FIELDS, Person
from humantag.workers.images import DecodedImage
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.labelers.humanvlm import HumanVLMLabeler, generation
from humantag.workers.labelers.humanvlm.schema import SEPARATORS, SchemaSpec, _longest_instance, person_schema, token_bound
from humantag.workers.records import records_to_table, table_to_records

SIZES = [(20, 30), (64, 48), (33, 33)]  # (h, w): mixed sizes in one batch


def make_images(sizes=SIZES, seed: int = 0) -> list[DecodedImage]:
    rng = np.random.default_rng(seed)
    return [
        DecodedImage(uri=f"mem://img{i}.png", width=w, height=h, format="PNG", mode="RGB",
                     pixels=rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for i, (h, w) in enumerate(sizes)
    ]


def options(model_dir: Path, tmp_path: Path, **extra) -> LabelerOptions:
    sensitive = extra.pop("sensitive", False)
    return LabelerOptions(
        model=str(model_dir), batch_size=4, device="cpu", sensitive_attributes=sensitive,
        extra={"max_persons": 2, "caption_max_new_tokens": 24, "cache_dir": str(tmp_path / "cache"), **extra},
    )


@pytest.fixture(scope="module")
def labeler(tiny_llava_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> HumanVLMLabeler:
    lab = create_labeler("humanvlm", options(tiny_llava_dir, tmp_path_factory.mktemp("lab")))
    lab.setup()
    return lab  # type: ignore[return-value]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Any connection other than loopback fails the test (and is recorded)."""
    attempts: list = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address) -> None:  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not host.startswith(("127.", "::1", "localhost", "/")):
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
    assert attempts == []


def test_registered_and_placement(tiny_llava_dir: Path, tmp_path: Path) -> None:
    lab = create_labeler("humanvlm", LabelerOptions(model=str(tiny_llava_dir)))
    assert isinstance(lab, HumanVLMLabeler)
    assert lab.default_placement().num_gpus == 1.0
    half = create_labeler("humanvlm", LabelerOptions(extra={"gpus_per_replica": 0.5}))
    assert half.default_placement().num_gpus == 0.5
    assert create_labeler("humanvlm", options(tiny_llava_dir, tmp_path)).default_placement().num_gpus == 0.0
    with pytest.raises(ValidationError):
        create_labeler("humanvlm", LabelerOptions(extra={"max_persns": 3}))


def test_image_tokens_match_vision_tower(labeler: HumanVLMLabeler, tiny_llava_default_strategy_dir: Path, tmp_path: Path) -> None:
    other = create_labeler("humanvlm", options(tiny_llava_default_strategy_dir, tmp_path))
    other.setup()
    counts = {}
    for lab in (labeler, other):
        loaded = lab._loaded
        for image in make_images():
            prepared = generation.prepare(loaded, image, lab._prompts.first)
            with torch.inference_mode():
                features = loaded.model.get_image_features(pixel_values=prepared.pixel_values).pooler_output
            n_features = sum(f.shape[0] for f in features) if isinstance(features, (list, tuple)) else features.shape[-2]
            assert prepared.num_image_tokens == n_features
            assert int((prepared.prompt_ids == loaded.image_token_id).sum()) == n_features
            counts[loaded.model.config.vision_feature_select_strategy] = n_features
    # 32 px / patch 8 = 16 patches; "default" drops one (the CLS slot SigLIP doesn't have).
    assert counts == {"full": 16, "default": 15}


def test_left_padding_does_not_change_output(labeler: HumanVLMLabeler) -> None:
    loaded = labeler._loaded
    prepared = generation.prepare(loaded, make_images()[0], labeler._prompts.first)
    longer = torch.cat([prepared.prompt_ids[:1], torch.tensor([50, 60, 70, 80, 90]), prepared.prompt_ids[1:]])
    alone = generation.generate(loaded, [prepared.prompt_ids], [prepared.pixel_values], 12)
    padded = generation.generate(loaded, [longer, prepared.prompt_ids], [prepared.pixel_values] * 2, 12)
    assert padded[1].token_ids == alone[0].token_ids


def test_batch_of_mixed_sizes_is_schema_valid_with_confidences(labeler: HumanVLMLabeler) -> None:
    outputs = labeler.label(make_images())
    assert len(outputs) == len(SIZES)
    for out in outputs:
        assert out.error_kind is None, out.error_message
        assert out.prompt_version == labeler.prompt_version
        assert isinstance(out.caption, str)
        assert 0 <= out.people_count <= 999
        assert out.scene is not None
        for name in ("environment", "setting"):
            value, conf = getattr(out.scene, name), getattr(out.scene, f"{name}_confidence")
            assert (conf is None) == (value is None)
            assert conf is None or 0.0 <= conf <= 1.0
        assert len(out.persons) <= 2
        for person in out.persons:
            Person.model_validate(person.model_dump())
            conf = person.confidence.model_dump()
            for name, value in conf.items():
                assert (value is None) == (getattr(person, name) is None), name
                assert value is None or 0.0 <= value <= 1.0
            assert person.gender_presentation is None
    # The pinned random model (seed in the fixture) lists a person: the per-person path ran.
    assert any(out.persons for out in outputs)


def test_tight_token_budget_still_parses(tiny_llava_dir: Path, tmp_path: Path) -> None:
    budget = token_bound(SchemaSpec(max_persons=1))
    lab = create_labeler("humanvlm", options(tiny_llava_dir, tmp_path, attributes_max_new_tokens=budget, caption=False))
    assert lab.spec.max_persons == 1 and lab.attributes_max_new_tokens == budget
    outputs = lab.label(make_images(SIZES[:2]))
    assert all(o.error_kind is None for o in outputs), [o.error_message for o in outputs]
    assert all(len(o.persons) <= 1 and o.caption is None for o in outputs)


def test_sensitive_attributes_only_when_enabled(tiny_llava_dir: Path, labeler: HumanVLMLabeler, tmp_path: Path) -> None:
    assert "gender_presentation" not in labeler._prompts.follow_up
    assert labeler.run_info()["sensitive_attributes"] is False
    lab = create_labeler("humanvlm", options(tiny_llava_dir, tmp_path, sensitive=True, caption=False))
    lab.setup()
    assert "gender_presentation" in lab._prompts.first  # no caption: the attributes are the first turn
    assert lab.prompt_version != labeler.prompt_version
    assert lab.run_info()["sensitive_attributes"] is True
    # The grammar itself admits the field only when enabled: the model cannot emit it otherwise.
    person = {**_longest_instance(person_schema(SchemaSpec())), "gender_presentation": "feminine"}
    document = json.dumps({"people_count": 1, "scene": {"environment": None, "setting": None}, "persons": [person]},
                          separators=SEPARATORS)
    assert xgr.GrammarMatcher(lab._constraint.grammar).accept_string(document)
    assert not xgr.GrammarMatcher(labeler._constraint.grammar).accept_string(document)
    outputs = lab.label(make_images(SIZES[:1]))
    assert outputs[0].error_kind is None and outputs[0].persons
    for p in outputs[0].persons:
        for field in SENSITIVE_PERSON_FIELDS:
            assert (getattr(p, field) is None) == (getattr(p.confidence, field) is None)


def test_bad_images_are_error_rows_in_parquet(tiny_llava_dir: Path, tmp_path: Path, no_network: list) -> None:
    replica = LabelerReplica("humanvlm", options(tiny_llava_dir, tmp_path, max_image_pixels=60 * 60))
    images = make_images()  # img1 is 64x48 = 3072 px: fine
    images.append(DecodedImage(uri="mem://huge.png", width=80, height=80,
                               pixels=np.zeros((80, 80, 3), dtype=np.uint8)))
    images.append(DecodedImage(uri="mem://empty.png", pixels=np.zeros((0, 4, 3), dtype=np.uint8)))
    images.append(DecodedImage(uri="mem://broken.jpg", error_kind="truncated", error_message="cut short"))
    rows = replica.label(images, run_id="run1", shard_id="shard1")
    table = records_to_table(rows)
    back = {r.uri: r for r in table_to_records(table)}
    assert [back[f"mem://img{i}.png"].status for i in range(3)] == ["ok"] * 3
    assert back["mem://huge.png"].error_kind == "too_large"
    assert back["mem://empty.png"].error_kind == "preprocess_error"
    assert back["mem://broken.jpg"].error_kind == "truncated"
    version = replica.labeler.version
    assert version.startswith("model@sha256-")
    for i in range(3):
        row = back[f"mem://img{i}.png"]
        assert row.labeler == "humanvlm" and row.labeler_version == version
        assert row.prompt_version and row.prompt_version.startswith("v2-")
        assert row.scene is not None and row.people_count is not None
    assert set(table.column("labeler_version").to_pylist()) == {version}


def test_runs_in_a_ray_actor(ray_local, tiny_llava_dir: Path, tmp_path: Path) -> None:
    import ray

    opts = options(tiny_llava_dir, tmp_path, caption=False)
    placement = create_labeler("humanvlm", opts).default_placement()
    pool = LabelerPool("humanvlm", opts, replicas=1, placement=placement)
    try:
        (description,) = pool.descriptions
        assert description["device"] == "cpu" and description["prompt_version"].startswith("v2-")
        ref = pool.submit(ray.put(make_images(SIZES[:2])), "run1", "shard1")
        rows = ray.get(ref)
        pool.done(ref)
    finally:
        pool.shutdown()
    assert [r.status for r in rows] == ["ok", "ok"]
    assert all(r.labeler_version == description["labeler_version"] and r.prompt_version for r in rows)


ATTRIBUTE_STEPS = 48  # enough constrained steps to compare; complete outputs are checked elsewhere


class _StopAt:
    """Ends row i's answer after steps[i] tokens (None: never), as a model that says less would."""

    def __init__(self, steps: list, stop_id: int) -> None:
        self.steps, self.stop_id, self.step = steps, stop_id, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row, at in enumerate(self.steps):
            if at == self.step:
                scores[row] = float("-inf")
                scores[row, self.stop_id] = 0.0
        self.step += 1
        return scores


def test_one_conversation_per_image_reuses_the_kv_cache_exactly(labeler: HumanVLMLabeler) -> None:
    """The attributes turn, continued from the caption's cache in a left-padded batch, is what
    recomputing each image's whole conversation from scratch gives; the vision tower runs once
    per image and the attributes turn prefills only its own request."""
    loaded, prompts = labeler._loaded, labeler._prompts
    images = make_images([(20, 30), (64, 48), (33, 33)], seed=5)
    prepared = [generation.prepare(loaded, image, prompts.first) for image in images]
    encoded: list[int] = []
    hook = loaded.model.model.vision_tower.register_forward_hook(
        lambda _m, args, _out: encoded.append(int(args[0].shape[0])))
    try:
        said, conversation, first = generation.start(
            loaded, [p.prompt_ids for p in prepared], [p.pixel_values for p in prepared], 24,
            _StopAt([3, None, 11], loaded.stop_token_id))
        follow_up = labeler._follow_up_ids
        attrs, _, second = generation.reply(loaded, conversation, follow_up, ATTRIBUTE_STEPS,
                                            labeler._constraint.logits_processor(), with_probabilities=True)
    finally:
        hook.remove()
    assert encoded == [len(images)]  # one vision pass for the batch, none for the second turn
    assert second.prefill_tokens == len(images) * len(follow_up) + sum(not g.finished for g in said)
    assert [len(g.token_ids) for g in said] == [3, 24, 11]  # stop token and padding masked mid-row
    for p, caption, batched in zip(prepared, said, attrs):
        whole = torch.cat([p.prompt_ids, torch.tensor(caption.token_ids, dtype=torch.long), follow_up])
        (alone,) = generation.generate(loaded, [whole], [p.pixel_values], ATTRIBUTE_STEPS,
                                       labeler._constraint.logits_processor(), with_probabilities=True)
        assert len(batched.token_ids) == ATTRIBUTE_STEPS and batched.token_ids == alone.token_ids
        assert batched.probabilities == pytest.approx(alone.probabilities, abs=1e-4)


def test_labeler_counts_one_vision_pass_per_image(labeler: HumanVLMLabeler) -> None:
    before = (labeler.stats.images, labeler.stats.generate_calls)
    encoded: list[int] = []
    hook = labeler._loaded.model.model.vision_tower.register_forward_hook(
        lambda _m, args, _out: encoded.append(int(args[0].shape[0])))
    try:
        outputs = labeler.label(make_images())
    finally:
        hook.remove()
    assert all(o.error_kind is None and o.caption for o in outputs)
    assert sum(encoded) == len(SIZES)
    assert (labeler.stats.images - before[0], labeler.stats.generate_calls - before[1]) == (len(SIZES), 2)
