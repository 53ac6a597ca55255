"""The `cpu` labeler on the development set: real photos, the replica code path, figures it really reaches."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fixtures.devset import DEVSET_LABELS, label_files
from humantag.workers.actors import LabelerReplica
from humantag.workers.attributes import Color
from humantag.workers.images import DecodedImage
from humantag.workers.labelers import LabelerOptions, create_labeler, labeler_names
from humantag.workers.labelers.cpu.color import dominant_color
from humantag.workers.labelers.cpu.detectors import cascade_score, hog_score
from humantag.workers.labelers.cpu.quality import measure_quality

LABELS = {json.loads(line)["image"]: json.loads(line) for line in DEVSET_LABELS.read_text().splitlines() if line}


@pytest.fixture(scope="module")
def replica() -> LabelerReplica:
    return LabelerReplica("cpu", LabelerOptions())


@pytest.fixture(scope="module")
def devset_rows(replica: LabelerReplica, devset_photos: list[Path]):
    return label_files(replica, devset_photos)


def test_registered_with_opencv_version() -> None:
    assert "cpu" in labeler_names()
    labeler = create_labeler("cpu")
    assert cv2.__version__ in labeler.version
    assert labeler.decode_max_side == 1024


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.png"])
def test_no_person_on_cat_coffee_rocket(devset_rows, name: str) -> None:
    row = devset_rows[name]
    assert row.status == "ok"
    assert (row.people_count, row.faces_visible, row.persons) == (0, 0, [])
    assert row.caption == "No person detected."
    assert row.labeler == "cpu"


@pytest.mark.parametrize("name", ["astronaut.png", "camera.png", "grace_hopper.jpg"])
def test_portraits_found_once_with_the_face_on_the_labeled_centre(devset_rows, name: str) -> None:
    row = devset_rows[name]
    assert row.people_count == 1 and row.faces_visible == 1
    (person,) = row.persons
    box = person.face_box
    (cx, cy), = LABELS[name]["face_centers"]
    assert box.x <= cx <= box.x + box.w and box.y <= cy <= box.y + box.h
    assert 0.5 <= box.score <= 1.0
    assert person.face_visible is True and person.confidence.face_visible == box.score
    assert row.caption.startswith("1 person, 1 face visible")


def test_attributes_measured_on_the_portraits(devset_rows) -> None:
    astronaut, camera, hopper = (devset_rows[n].persons[0] for n in ("astronaut.png", "camera.png", "grace_hopper.jpg"))
    # Smile cascade: strong on the astronaut (labeled smiling); silent on the
    # camera man's profile, which stays unknown rather than "not smiling".
    assert astronaut.smiling is True and astronaut.confidence.smiling > 0.8
    assert camera.smiling is None
    assert astronaut.upper_clothing_color == "orange"
    assert hopper.upper_clothing_color == "black"
    # The camera man leans left of his face: below it is the tripod, in a grey photo -> unknown.
    assert camera.upper_clothing_color is None
    # No reliable eyewear detector ships with OpenCV: never guessed.
    assert all(p.eyewear is None for p in (astronaut, camera, hopper))
    assert "smiling" in devset_rows["astronaut.png"].caption and "orange on top" in devset_rows["astronaut.png"].caption


def test_quality_flags(devset_rows) -> None:
    for row in devset_rows.values():
        assert row.quality.blurry is False and row.quality.overexposed is False
    dark = measure_quality(np.full((300, 400), 12, np.uint8))
    assert dark.underexposed is True and dark.blurry is True
    bright = measure_quality(np.full((300, 400), 250, np.uint8))
    assert bright.overexposed is True


def test_colour_names() -> None:
    def patch(rgb: tuple[int, int, int]) -> np.ndarray:
        return np.tile(np.array(rgb, np.uint8), (20, 20, 1))

    cases: dict[tuple[int, int, int], Color] = {
        (200, 30, 30): "red", (240, 120, 20): "orange", (30, 160, 40): "green",
        (30, 60, 200): "blue", (10, 10, 10): "black", (245, 245, 245): "white", (128, 128, 128): "gray",
    }
    for rgb, name in cases.items():
        assert dominant_color(patch(rgb), grayscale=False)[0] == name, rgb
    assert dominant_color(patch((128, 128, 128)), grayscale=True) == (None, None)
    stripes = np.concatenate([patch((200, 30, 30)), patch((30, 160, 40)), patch((30, 60, 200))])
    assert dominant_color(stripes, grayscale=False)[0] == "multicolor"


def test_scores_are_probability_like() -> None:
    assert cascade_score(3) < 0.5 < cascade_score(5) < cascade_score(20) < 1.0
    assert hog_score(1.24) < 0.5 < hog_score(2.0)


def test_lfw_face_or_not(replica: LabelerReplica, lfw_devset) -> None:
    paths, _ = lfw_devset
    rows = label_files(replica, paths)
    predicted = np.array([rows[p.name].faces_visible > 0 for p in paths])
    truth = np.array(["_face_" in p.name for p in paths])
    # Measured: 97 of 100 faces found, 0 of 100 non-faces taken for a face (accuracy 0.985).
    assert int((predicted & truth).sum()) >= 96
    assert int((predicted & ~truth).sum()) <= 1
    assert (predicted == truth).mean() >= 0.98


def test_a_broken_image_is_an_error_row(replica: LabelerReplica) -> None:
    broken = DecodedImage(uri="file:///broken.png", width=0, height=0, pixels=np.zeros((0, 0, 3), np.uint8))
    good = DecodedImage(uri="file:///grey.png", width=64, height=64, pixels=np.full((64, 64, 3), 100, np.uint8))
    rows = replica.label([broken, good], "r", "s")
    assert rows[0].status == "error" and rows[0].error_kind == "label_error"
    assert rows[1].status == "ok" and rows[1].people_count == 0


def test_boxes_are_in_source_pixels(replica: LabelerReplica, devset_photos: list[Path]) -> None:
    """Decoding at half size must not change where the face is said to be."""
    from tests.fixtures.devset import decode_files

    path = next(p for p in devset_photos if p.name == "grace_hopper.jpg")
    full, = decode_files([path], None)
    half, = decode_files([path], 300)
    assert half.scale == pytest.approx(0.5, abs=0.01)
    a, b = (replica.labeler.label([img])[0].persons[0].face_box for img in (full, half))
    assert abs(a.x - b.x) < 0.1 * a.w and abs(a.y - b.y) < 0.1 * a.h and abs(a.w - b.w) < 0.2 * a.w
