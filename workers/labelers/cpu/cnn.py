"""The CNN detector set: SSDLite bodies at two scales and MTCNN faces, in one image's pixels.

Bodies, two passes (measured on the development scenes, docs/cpu-labeler.md):
- the whole image squashed to 300x300, the network's training input, with all
  six predictor layers: people from ~1/3 of the image up to all of it;
- the image at `body_side` px (longer side), cut into overlapping 300 px tiles
  run as one batch (`body_tiles`, the default): small people, ~30-150 px in
  that copy. Without tiles the copy is scanned whole, reading only the three
  lowest layers (anchors 30-150 px; the higher ones fire on empty corners at
  input sizes they were not trained on): ~35 % cheaper, finds fewer people.
Boxes from both passes are merged by NMS. Faces: MTCNN down to `min_face` px
in the decoded image.
"""

from __future__ import annotations

import cv2
import numpy as np

from humantag.workers.labelers.cpu.detectors import Detection, Found, nms, suppress_duplicates
from humantag.workers.labelers.cpu.mtcnn import FaceNet
from humantag.workers.labelers.cpu.ssd import TRAIN_SIDE, PersonNet

# Candidates this weak are no evidence of anything; stronger ones may open the gate even
# below the labeler's min_score (which decides who is counted as a person).
EVIDENCE_FLOOR = 0.05
SMALL_PEOPLE_LAYERS = 3
BODY_NMS_IOU = 0.45
SMALL_PERSON_MAX = 0.6  # of a tile: taller boxes in a tile are fragments of someone the whole-image pass sees
FRAGMENT_OWNER_SCORE = 0.3


def _inside(inner: Detection, outer: Detection, share: float = 0.6) -> bool:
    """At least `share` of `inner`'s area lies inside `outer`."""
    w = max(0.0, min(inner.x + inner.w, outer.x + outer.w) - max(inner.x, outer.x))
    h = max(0.0, min(inner.y + inner.h, outer.y + outer.h) - max(inner.y, outer.y))
    return w * h >= share * inner.w * inner.h


class CnnDetectors:
    """One instance per thread: an OpenCV network is not safe to share between threads."""

    def __init__(self, body_side: int = 768, min_face: float = 16.0, body_tiles: bool = True) -> None:
        self.body_side = body_side
        self.body_tiles = body_tiles
        self.bodies = PersonNet()
        self.faces = FaceNet(min_face)

    def find_bodies(self, rgb: np.ndarray) -> list[Detection]:
        height, width = rgb.shape[:2]
        square = cv2.resize(rgb, (TRAIN_SIDE, TRAIN_SIDE), interpolation=cv2.INTER_AREA)
        sx, sy = width / TRAIN_SIDE, height / TRAIN_SIDE
        large = [Detection(d.x * sx, d.y * sy, d.w * sx, d.h * sy, d.score, d.kind) for d in self.bodies.detect(square, EVIDENCE_FLOOR)]
        small: list[Detection] = []
        if self.body_side and max(height, width) > TRAIN_SIDE:
            factor = min(1.0, self.body_side / max(height, width))
            sized = rgb if factor == 1.0 else cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            if self.body_tiles:
                found = [d for d in self.bodies.detect_tiles(sized, EVIDENCE_FLOOR) if d.h <= SMALL_PERSON_MAX * TRAIN_SIDE]
            else:
                found = self.bodies.detect(sized, EVIDENCE_FLOOR, layers=SMALL_PEOPLE_LAYERS, skip_corner=True)
            # A tile sees only part of a large person: such fragments lie inside that person's
            # box from the whole-image pass and are dropped (else one portrait counts as several).
            people = [d for d in large if d.score >= FRAGMENT_OWNER_SCORE]
            small = [d.scaled(1.0 / factor) for d in found]
            small = [d for d in small if not any(_inside(d, p) for p in people)]
        return nms(large + small, BODY_NMS_IOU)

    def find(self, rgb: np.ndarray, gray: np.ndarray, bodies: bool = True) -> Found:
        faces = self.faces.detect(rgb, EVIDENCE_FLOOR) if min(rgb.shape[:2]) >= 12 else []
        return Found(faces=suppress_duplicates(faces, 0.3), bodies=self.find_bodies(rgb) if bodies else [])
