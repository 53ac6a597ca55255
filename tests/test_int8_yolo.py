"""YOLOv4-tiny with int8 convolutions (darknet_int8.py): what `precision=auto` runs where the CPU has VNNI.

Its rows must still be the float network's people (same boxes; scores move by up
to ~0.15, int8 noise), its committed activation ranges must be what calibration
gives for the installed weights, and the closer look (which decides the gate on
weak bodies) must not run in int8.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from humantag.workers.devset import make_scene
from humantag.workers.labelers import LabelerOptions
from humantag.workers.labelers.cpu import darknet_int8, yolo
from humantag.workers.labelers.cpu.cnn import YoloBodies
from humantag.workers.labelers.cpu.detectors import iou
from humantag.workers.labelers.cpu.labeler import CpuLabeler
from humantag.workers.labelers.cpu.weights import YOLO_WEIGHTS, DetectorUnavailable


@pytest.fixture(scope="module")
def nets() -> tuple[yolo.YoloPersonNet, yolo.YoloPersonNet]:
    return yolo.YoloPersonNet("fp32"), yolo.YoloPersonNet("int8")


@pytest.mark.parametrize("index", [3, 5, 10])
def test_int8_finds_the_people_fp32_finds(nets, index: int) -> None:
    fp32, int8 = nets
    assert int8.precision == "int8"
    scene = make_scene(index, seed=1)
    reference = fp32.detect(scene.rgb, 0.05, 832)
    found = int8.detect(scene.rgb, 0.05, 832)
    strong = [d for d in reference if d.score >= 0.3]
    assert strong, "the scene should hold people the float32 pass finds"
    for person in strong:
        twin = max(found, key=lambda d: iou(d, person))
        assert iou(twin, person) >= 0.9 and abs(twin.score - person.score) <= 0.2, (person, twin)


def test_the_committed_ranges_are_the_calibration_of_the_installed_weights() -> None:
    committed = darknet_int8.load_ranges(YOLO_WEIGHTS.locate())
    fresh = darknet_int8.calibrate(yolo.load_darknet_yolo(), darknet_int8.calibration_inputs())
    assert committed.keys() == fresh.keys()
    for key, expected in fresh.items():
        assert committed[key].low == pytest.approx(expected.low, rel=1e-5, abs=1e-6), key
        assert committed[key].high == pytest.approx(expected.high, rel=1e-5, abs=1e-6), key


def test_ranges_of_other_weights_fail_in_one_line(tmp_path) -> None:
    body = json.loads(darknet_int8.RANGES_FILE.read_text())
    body["weights_sha256"] = "0" * 64
    other = tmp_path / "ranges.json"
    other.write_text(json.dumps(body))
    with pytest.raises(DetectorUnavailable) as error:
        darknet_int8.load_ranges(YOLO_WEIGHTS.locate(), other)
    assert "\n" not in str(error.value) and "calibrated for other weights" in str(error.value)
    other.write_text("{not json")
    with pytest.raises(DetectorUnavailable) as error:
        darknet_int8.load_ranges(YOLO_WEIGHTS.locate(), other)
    assert "\n" not in str(error.value) and "cannot read the int8 ranges" in str(error.value)


def test_the_closer_look_does_not_run_in_int8() -> None:
    bodies = YoloBodies(832, look_again=True, precision="int8")
    assert bodies.net.precision == "int8" and bodies.closer_net.precision in ("bf16", "fp32")
    assert YoloBodies(832, look_again=True, precision="bf16").closer_net is not None


def test_auto_picks_int8_only_where_the_cpu_has_vnni(monkeypatch) -> None:
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet_int8.native_int8", lambda: True)
    assert yolo.resolve_precision("auto") == "int8"
    assert CpuLabeler().run_info()["precision"] == "int8"
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet_int8.native_int8", lambda: False)
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet.native_bf16", lambda: True)
    assert yolo.resolve_precision("auto") == "bf16"
    assert "/auto/" in CpuLabeler().version and "/int8/" in CpuLabeler(LabelerOptions(extra={"precision": "int8"})).version
    assert isinstance(darknet_int8.native_int8(), bool)
