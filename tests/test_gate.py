"""The person gate in front of another labeler, and the default-labeler choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.devset import label_files
from humantag.workers.actors import LabelerReplica
from humantag.workers.attributes import Box, Person
from humantag.workers.images import DecodedImage
from humantag.workers.labelers import REGISTRY, LabelerOptions, LabelOutput, create_labeler
from humantag.workers.labelers.base import Labeler, LabelerIdentity
from humantag.workers.labelers.gate import GateThresholds, attach_boxes

PORTRAITS = {"astronaut.png", "camera.png", "grace_hopper.jpg"}


def test_no_person_skips_the_inner_labeler(devset_photos: list[Path]) -> None:
    replica = LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "image-facts"}))
    rows = label_files(replica, devset_photos)
    for name, row in rows.items():
        assert row.status == "ok"
        if name in PORTRAITS:
            # Went to image-facts (its phash is there) with the detector's boxes as the persons.
            assert row.gated is False and row.labeler == "image-facts" and row.phash
            assert row.people_count == 1 and row.persons[0].face_box is not None
        else:
            # Never reached image-facts: no phash, the detector's own result, recorded as gated.
            assert row.gated is True and row.labeler == "cpu" and row.phash is None
            assert row.people_count == 0 and row.caption == "No person detected."
    assert sum(bool(r.gated) for r in rows.values()) == 3
    # Incremental runs treat both kinds of rows as current.
    assert {r.labeler_version for r in rows.values()} <= {i.version for i in replica.labeler.current_identities()}
    info = replica.describe()
    defaults = GateThresholds()
    assert info["gate_inner"] == "image-facts"
    assert info["gate_face_threshold"] == defaults.face and info["gate_body_threshold"] == defaults.body
    assert info["labeler_version"].startswith(f"gate-face-{defaults.face:g}-body-{defaults.body:g}/cpu-")


def test_thresholds_are_configurable(devset_photos: list[Path]) -> None:
    portraits = [p for p in devset_photos if p.name in PORTRAITS]

    def gate(face: float, body: float) -> LabelerReplica:
        return LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "cpu", "gate_face_threshold": face, "gate_body_threshold": body}))

    # Above any score (evidence is in [0, 1]): everything is held back, with its evidence recorded.
    strict = label_files(gate(1.01, 1.01), portraits)
    assert all(r.gated and r.gate_score > 0.99 and r.gate_detector == "face" for r in strict.values())
    lenient = label_files(gate(0.3, 0.1), portraits)
    assert not any(r.gated for r in lenient.values()) and all(r.labeler == "cpu" for r in lenient.values())
    # Bodies alone (faces can never open it): the portraits still pass, on their bodies.
    bodies_only = label_files(gate(1.01, 0.2), portraits)
    assert all(not r.gated and r.gate_detector == "body" for r in bodies_only.values())


def test_the_row_records_the_candidate_that_decided() -> None:
    from humantag.workers.labelers.cpu.analyse import Evidence

    thresholds = GateThresholds(face=0.5, body=0.2)
    assert thresholds.decide(Evidence(face=0.45, body=0.3)) == (True, 0.3, "body")
    assert thresholds.decide(Evidence(face=0.9, body=0.3)) == (True, 0.9, "face")  # the stronger of the passing
    assert thresholds.decide(Evidence(face=0.99, body=0.99)) == (True, 0.99, "face")
    # Held back: the candidate nearest to passing is what the row records.
    assert thresholds.decide(Evidence(face=0.45, body=0.1)) == (False, 0.45, "face")
    assert thresholds.decide(Evidence(face=0.0, body=0.0)) == (False, 0.0, None)


def test_unknown_or_bad_gate_options_fail_with_one_line() -> None:
    with pytest.raises(ValueError, match="unknown gate option gate_threshold") as error:
        create_labeler("gate", LabelerOptions(extra={"gate_threshold": 0.4}))
    assert "gate_face_threshold" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="above 0"):
        create_labeler("gate", LabelerOptions(extra={"gate_body_threshold": 0}))


def test_default_inner_is_humanvlm() -> None:
    gate = create_labeler("gate")
    assert gate.inner_name == "humanvlm" and gate.inner.name == "humanvlm"
    with pytest.raises(ValueError, match="cannot wrap itself"):
        create_labeler("gate", LabelerOptions(extra={"gate_inner": "gate"}))


class _NamesPeople(Labeler):
    """An inner labeler that describes two people itself, one of them with its own box."""

    name = "test-names-people"

    def identity(self) -> LabelerIdentity:
        return LabelerIdentity("test-1")

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        raise AssertionError("the gate must call label_with_persons")

    def label_with_persons(self, images, detected):
        self.seen = detected
        return [LabelOutput(people_count=1, persons=[Person(smiling=True)]) for _ in images]


class _Broken(Labeler):
    name = "test-broken"

    def identity(self) -> LabelerIdentity:
        return LabelerIdentity("test-1")

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        raise RuntimeError("out of GPU memory")


def test_inner_receives_the_detected_persons(monkeypatch, devset_photos: list[Path]) -> None:
    monkeypatch.setitem(REGISTRY, "test-names-people", f"{__name__}:_NamesPeople")
    replica = LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "test-names-people"}))
    photos = [p for p in devset_photos if p.name in ("astronaut.png", "coffee.png")]
    rows = label_files(replica, photos)
    (seen,) = replica.labeler.inner.seen
    assert len(seen) == 1 and seen[0].face_box is not None
    astronaut = rows["astronaut.png"]
    assert astronaut.labeler == "test-names-people" and astronaut.people_count == 1
    assert astronaut.persons[0].smiling is True and astronaut.persons[0].face_box == seen[0].face_box
    assert rows["coffee.png"].gated is True


def test_inner_failure_keeps_the_gated_rows(monkeypatch, devset_photos: list[Path]) -> None:
    monkeypatch.setitem(REGISTRY, "test-broken", f"{__name__}:_Broken")
    replica = LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "test-broken"}))
    rows = label_files(replica, [p for p in devset_photos if p.name in ("astronaut.png", "rocket.png")])
    assert rows["astronaut.png"].status == "error" and "out of GPU memory" in rows["astronaut.png"].error_message
    assert rows["rocket.png"].status == "ok" and rows["rocket.png"].gated is True


def _person(x: int, score: float = 0.9) -> Person:
    return Person(face_box=Box(x=x, y=10, w=20, h=20, score=score))


def test_attach_boxes_by_overlap_then_left_to_right() -> None:
    detected = [_person(0), _person(100), _person(200)]
    own = Person(person_box=Box(x=190, y=0, w=60, h=120))  # overlaps the third detection
    plain = Person(smiling=True)
    persons = [plain, own]
    attach_boxes(persons, detected)
    assert own.face_box == detected[2].face_box and own.person_box.x == 190
    assert plain.face_box == detected[0].face_box
    assert len(persons) == 2  # the inner labeler's list stays authoritative


def test_default_labeler_without_gpu(ray_local) -> None:
    import ray

    from humantag.workers.labelers.default import choose_default_labeler

    assert ray.cluster_resources().get("GPU", 0) == 0
    name, reason = choose_default_labeler()
    assert name == "cpu" and "no GPU" in reason


def test_gate_in_front_of_tiny_humanvlm(tiny_llava_dir: Path, tmp_path: Path, devset_photos: list[Path]) -> None:
    """The production pairing, with the tiny random HumanVLM: detector keys go to the detector, the rest to HumanVLM."""
    options = LabelerOptions(
        model=str(tiny_llava_dir), batch_size=4, device="cpu",
        extra={"max_persons": 2, "caption_max_new_tokens": 8, "cache_dir": str(tmp_path / "cache"), "detect_side": 320},
    )
    replica = LabelerReplica("gate", options)
    gate = replica.labeler
    assert gate.inner_name == "humanvlm" and gate.detector.detect_side == 320
    assert gate.decode_max_side == gate.inner.decode_max_side
    assert gate.default_placement().num_gpus == 0.0  # device=cpu
    rows = label_files(replica, [p for p in devset_photos if p.name in ("astronaut.png", "chelsea.png")])
    astronaut, cat = rows["astronaut.png"], rows["chelsea.png"]
    assert cat.gated is True and cat.labeler == "cpu" and cat.status == "ok"
    assert astronaut.status == "ok", astronaut.error_message
    assert astronaut.gated is False and astronaut.labeler == "humanvlm"
    assert astronaut.labeler_version == gate.inner.version and astronaut.prompt_version
    # Random weights say whatever the grammar allows; whoever they describe first gets the detected face.
    if astronaut.persons:
        assert astronaut.persons[0].face_box is not None
        assert astronaut.persons[0].face_box.score >= 0.5
