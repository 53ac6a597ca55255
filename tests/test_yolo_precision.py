"""YOLOv4-tiny in torch (darknet.py, for bfloat16) against OpenCV's Darknet reader, and the NMS both share.

The torch port must give OpenCV's rows (same boxes, same objectness x class
scores zeroed at 0.2) so the thresholds chosen on OpenCV's scores keep their
meaning; bfloat16 then moves scores in the second decimal only.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from humantag.workers.devset import _photo, make_scene
from humantag.workers.labelers.cpu import yolo
from humantag.workers.labelers.cpu.darknet import DarknetYolo, native_bf16
from humantag.workers.labelers.cpu.detectors import Detection, iou, nms_boxes
from humantag.workers.labelers.cpu.labeler import CpuLabeler
from humantag.workers.labelers.cpu.weights import YOLO_CFG, YOLO_WEIGHTS, DetectorUnavailable, WeightFile
from humantag.workers.labelers import LabelerOptions


def _opencv_rows(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    net = yolo.load_yolo_net()
    net.setInput(cv2.dnn.blobFromImage(rgb, 1.0 / 255.0, size, swapRB=False, crop=False))
    return np.concatenate([r.reshape(-1, r.shape[-1]) for r in net.forward(net.getUnconnectedOutLayersNames())])


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_the_torch_port_in_float32_gives_opencvs_rows(photo: str) -> None:
    rgb = _photo(photo)
    size = yolo.input_size(*rgb.shape[:2], 832)
    expected = _opencv_rows(rgb, size)
    net = yolo.load_darknet_yolo(kept=tuple(range(80)))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    with torch.inference_mode():
        got = net.decode(net(torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255.0), *size)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[:, :5], expected[:, :5], atol=2e-3)
    # Class scores: equal, except where one side sits on the 0.2 floor and the other just above it.
    differ = np.abs(got[:, 5:] - expected[:, 5:]) > 2e-3
    assert differ.sum() <= 2 and np.all(np.maximum(got[:, 5:], expected[:, 5:])[differ] < 0.21)


def test_bf16_finds_the_people_fp32_finds() -> None:
    scene = make_scene(3, seed=1)  # pasted people of several sizes
    fp32 = yolo.YoloPersonNet("fp32").detect(scene.rgb, 0.05, 832)
    bf16 = yolo.YoloPersonNet("bf16").detect(scene.rgb, 0.05, 832)
    strong = [d for d in fp32 if d.score >= 0.3]
    assert strong, "the scene should hold people the float32 pass finds"
    for person in strong:
        twin = max(bf16, key=lambda d: iou(d, person))
        assert iou(twin, person) >= 0.8 and abs(twin.score - person.score) <= 0.05


def test_auto_precision_follows_the_cpu_and_the_version_names_the_setting(monkeypatch) -> None:
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet_int8.native_int8", lambda: False)  # tests/test_int8_yolo.py
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet.native_bf16", lambda: False)
    assert yolo.resolve_precision("auto") == "fp32"
    monkeypatch.setattr("humantag.workers.labelers.cpu.darknet.native_bf16", lambda: True)
    assert yolo.resolve_precision("auto") == "bf16" and yolo.resolve_precision("fp32") == "fp32"
    auto, fp32 = CpuLabeler(), CpuLabeler(LabelerOptions(extra={"precision": "fp32"}))
    # The setting, not what it resolves to: a driver and its workers may run on different CPUs.
    assert "/auto/" in auto.version and "/fp32/" in fp32.version
    assert auto.run_info()["precision"] == "bf16"
    assert isinstance(native_bf16(), bool)


@pytest.mark.parametrize("change", ["cut", "extended"])
def test_weights_that_do_not_fit_the_cfg_fail_in_one_line(tmp_path, change: str) -> None:
    original = YOLO_WEIGHTS.locate().read_bytes()
    other = tmp_path / "yolov4-tiny.weights"
    other.write_bytes(original[:1_000_000] if change == "cut" else original + bytes(400))
    with pytest.raises(DetectorUnavailable) as error:
        DarknetYolo(YOLO_CFG.locate(), other, (0,))
    assert "\n" not in str(error.value) and "do not belong to this cfg" in str(error.value)


def test_a_cfg_layer_it_cannot_build_fails_in_one_line(tmp_path) -> None:
    cfg = tmp_path / "other.cfg"
    cfg.write_text(YOLO_CFG.locate().read_text().replace("[maxpool]", "[shortcut]", 1))
    with pytest.raises(DetectorUnavailable) as error:
        DarknetYolo(cfg, YOLO_WEIGHTS.locate(), (0,))
    assert "\n" not in str(error.value) and "[shortcut]" in str(error.value)


def test_opencvs_nms_keeps_what_the_greedy_reference_keeps() -> None:
    rng = np.random.default_rng(7)
    for trial in range(60):
        count = int(rng.integers(1, 300))
        corner = rng.uniform(0, 400, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(4, 90, (count, 2))], axis=1)
        if trial % 2:
            boxes = boxes.round()  # MTCNN's boxes are whole pixels
        scores = rng.random(count).astype(np.float32)
        for overlap in (0.3, 0.5, 0.7):
            kept = nms_boxes(boxes, scores, overlap)
            reference: list[int] = []
            for i in np.argsort(-scores, kind="stable"):
                a = Detection(boxes[i, 0], boxes[i, 1], boxes[i, 2] - boxes[i, 0] + 1, boxes[i, 3] - boxes[i, 1] + 1, 1.0, "body")
                if all(iou(a, Detection(boxes[k, 0], boxes[k, 1], boxes[k, 2] - boxes[k, 0] + 1, boxes[k, 3] - boxes[k, 1] + 1, 1.0, "body")) <= overlap for k in reference):
                    reference.append(int(i))
            assert sorted(kept.tolist()) == sorted(reference)
