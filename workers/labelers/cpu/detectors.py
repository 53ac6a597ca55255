"""Face and person detectors that ship inside opencv-python-headless (no downloads).

Faces: the frontal Haar cascade (alt2) plus the profile cascade run on the
image and on its mirror (the cascade only knows one facing direction).
People: OpenCV's built-in HOG + linear SVM pedestrian detector (Dalal-Triggs).

Every detection carries a score in [0, 1] so one threshold works across them:
- cascades: 1 - exp(-neighbours / 6), from the number of overlapping raw hits
  that were merged into the box (the cascade's own notion of support): 3
  neighbours (the minimum we accept) -> 0.39, 6 -> 0.63, 20 -> 0.96;
- HOG: logistic(2.5 * (margin - 1.5)) of the SVM margin, so margin 1.5 -> 0.5.
  The one HOG false positive seen on the development photos (the helmet in
  `astronaut`) has margin 1.24 -> 0.34, below the default threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

DetectorKind = Literal["frontal", "profile", "body"]

CASCADE_MIN_NEIGHBORS = 3
HOG_MIN_MARGIN = 0.5


@dataclass(frozen=True)
class Detection:
    """A box in the coordinates of the image the caller passed in."""

    x: float
    y: float
    w: float
    h: float
    score: float
    kind: DetectorKind

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def contains(self, point: tuple[float, float]) -> bool:
        px, py = point
        return self.x <= px <= self.x + self.w and self.y <= py <= self.y + self.h

    def scaled(self, factor: float) -> "Detection":
        return Detection(self.x * factor, self.y * factor, self.w * factor, self.h * factor, self.score, self.kind)


@dataclass(frozen=True)
class Found:
    """Face and body candidates in the pixels of the image they were searched in."""

    faces: list[Detection]
    bodies: list[Detection]


def cascade_score(neighbors: int) -> float:
    return 1.0 - math.exp(-neighbors / 6.0)


def hog_score(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-2.5 * (margin - 1.5)))


def load_cascade(file_name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + file_name
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load {path}: is opencv-python-headless<5 installed?")
    return cascade


def iou(a: Detection, b: Detection) -> float:
    x1, y1 = max(a.x, b.x), max(a.y, b.y)
    x2, y2 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def nms_boxes(boxes: np.ndarray, scores: np.ndarray, overlap: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy NMS over (x1, y1, x2, y2) boxes; `by_min`: overlap over the smaller box."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    if not by_min:
        # OpenCV's NMS keeps a box when its IoU with every kept one is <= overlap, as below; given
        # (x, y, w + 1, h + 1) its areas and overlaps are the inclusive-pixel ones below. ~10x faster.
        rects = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)
        order = np.asarray(scores, dtype=np.float64)
        order = (order - order.min() + 1.0).astype(np.float32)  # OpenCV drops scores <= its threshold, which must be >= 0
        kept = cv2.dnn.NMSBoxes(rects.astype(np.float64), order, 0.0, overlap)
        return np.asarray(kept, dtype=np.int64).reshape(-1)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / denom <= overlap]
    return np.asarray(keep, dtype=np.int64)


def nms(detections: list[Detection], overlap: float) -> list[Detection]:
    """Greedy non-maximum suppression by IoU, strongest first."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(iou(det, k) < overlap for k in kept):
            kept.append(det)
    return kept


def suppress_duplicates(detections: list[Detection], overlap: float = 0.3) -> list[Detection]:
    """Greedy NMS; a box whose centre lies inside a kept box is the same face too."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(iou(det, k) < overlap and not k.contains(det.center) and not det.contains(k.center) for k in kept):
            kept.append(det)
    return kept


class FaceDetector:
    def __init__(self, scale_factor: float = 1.2, min_size: int = 20, profile_scale: float = 0.75) -> None:
        self.frontal = load_cascade("haarcascade_frontalface_alt2.xml")
        self.profile = load_cascade("haarcascade_profileface.xml")
        self.scale_factor = scale_factor
        self.min_size = min_size
        # The profile cascade costs ~2x the frontal one and runs twice (mirrored):
        # it scans a smaller copy, so profile faces must be 1/profile_scale larger.
        self.profile_scale = profile_scale

    def _run(self, cascade: cv2.CascadeClassifier, gray: np.ndarray) -> list[tuple[np.ndarray, int]]:
        boxes, neighbors = cascade.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=CASCADE_MIN_NEIGHBORS,
            minSize=(self.min_size, self.min_size),
        )
        return list(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(neighbors).ravel()))

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """`gray` is equalised uint8; returns faces after cross-detector duplicate suppression."""
        found = [Detection(*map(float, box), cascade_score(int(n)), "frontal") for box, n in self._run(self.frontal, gray)]
        small = gray
        if self.profile_scale < 1.0:
            small = cv2.resize(gray, None, fx=self.profile_scale, fy=self.profile_scale, interpolation=cv2.INTER_AREA)
        back = gray.shape[1] / small.shape[1]
        width = small.shape[1]
        for box, n in self._run(self.profile, small):
            found.append(Detection(*(float(v) * back for v in box), cascade_score(int(n)), "profile"))
        for (x, y, w, h), n in self._run(self.profile, np.ascontiguousarray(small[:, ::-1])):
            found.append(Detection((width - x - w) * back, y * back, w * back, h * back, cascade_score(int(n)), "profile"))
        # A frontal hit is the better box when both fire on one face: prefer it on ties.
        found.sort(key=lambda d: (d.score + (0.05 if d.kind == "frontal" else 0.0)), reverse=True)
        return suppress_duplicates(found)


class PersonDetector:
    def __init__(self, scale: float = 1.1) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.scale = scale

    def detect(self, gray: np.ndarray) -> list[Detection]:
        win_w, win_h = self.hog.winSize
        if gray.shape[0] < win_h or gray.shape[1] < win_w:
            return []
        rects, margins = self.hog.detectMultiScale(
            gray, hitThreshold=HOG_MIN_MARGIN, winStride=(8, 8), padding=(8, 8), scale=self.scale
        )
        found = [
            Detection(*map(float, rect), hog_score(float(m)), "body")
            for rect, m in zip(np.asarray(rects).reshape(-1, 4), np.asarray(margins).ravel())
        ]
        return suppress_duplicates(found, overlap=0.5)
