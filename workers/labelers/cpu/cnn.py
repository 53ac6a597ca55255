"""The CNN detector set: people's bodies (YOLOv4-tiny, or SSDLite for comparison) and MTCNN faces, in one image's pixels.

Bodies, `body_net`:
- `yolov4-tiny` (the default): the whole image at `body_side` px (longer side).
  When that pass and the faces found nobody, the image gets a closer look
  (`look_again`): one more pass at 1.5x `body_side`, where people too small for
  the first pass are found. "Nobody" means no face at `min_score` and no body
  at `min_body_score`, the levels at which the labeler counts a person. An
  image with someone found pays for one pass; one that seems empty pays for
  both (the second ~2.25x the first), which is what a recall-first gate should
  spend. (One enlarged pass found as many people as 2x2 enlarged tiles, which
  cost 4 passes' worth to its 2.25: docs/cpu-labeler.md.)
- `ssdlite` (the first CNN, kept for the side-by-side bench): the whole image
  squashed to 300x300 (people from ~1/3 of the image up), plus the image at
  `body_side` px cut into overlapping 300 px tiles (`body_tiles`; without
  tiles the copy is scanned whole through the three lowest layers).
Boxes from all passes are merged by NMS. Faces: MTCNN down to `min_face` px in
the decoded image. `precision`: YOLOv4-tiny in bfloat16 where the CPU computes it
natively (`auto`), else float32 (yolo.py); SSDLite and MTCNN are float32. Measured on the development scenes in docs/cpu-labeler.md.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from humantag.workers.labelers.cpu.detectors import Detection, Found, nms, suppress_duplicates
from humantag.workers.labelers.cpu.yolo import STRIDE, Precision, YoloPersonNet, closer_precision, resolve_precision

BodyNetName = Literal["yolov4-tiny", "ssdlite"]

# Candidates this weak are no evidence of anything; stronger ones may open the gate even
# below the labeler's min_score (which decides who is counted as a person).
EVIDENCE_FLOOR = 0.05
BODY_NMS_IOU = 0.45
LOOK_AGAIN_ZOOM = 1.5
SSD_SMALL_PEOPLE_LAYERS = 3
SSD_SMALL_PERSON_MAX = 0.6  # of a tile: taller boxes in a tile are fragments of someone the whole-image pass sees
SSD_FRAGMENT_OWNER_SCORE = 0.3


def _inside(inner: Detection, outer: Detection, share: float = 0.6) -> bool:
    """At least `share` of `inner`'s area lies inside `outer`."""
    w = max(0.0, min(inner.x + inner.w, outer.x + outer.w) - max(inner.x, outer.x))
    h = max(0.0, min(inner.y + inner.h, outer.y + outer.h) - max(inner.y, outer.y))
    return w * h >= share * inner.w * inner.h


class YoloBodies:
    def __init__(self, side: int, look_again: bool, precision: Precision = "auto") -> None:
        self.net = YoloPersonNet(precision)
        self.side = side
        self.look_again = look_again
        # The closer look decides the gate on images where nobody was found, from weak bodies
        # (0.05-0.3): int8 moves such scores by ~0.05, so with int8 it runs in the next precision.
        self.closer_net = self.net
        if look_again and self.net.precision == "int8":
            self.closer_net = YoloPersonNet(closer_precision())

    def find(self, rgb: np.ndarray) -> list[Detection]:
        return self.net.detect(rgb, EVIDENCE_FLOOR, self.side)

    def find_closer(self, rgb: np.ndarray) -> list[Detection]:
        """The closer look: the image enlarged, so small people reach the network's smallest anchors."""
        return self.closer_net.detect(rgb, EVIDENCE_FLOOR, round(self.side * LOOK_AGAIN_ZOOM / STRIDE) * STRIDE)


class SsdBodies:
    def __init__(self, side: int, tiles: bool) -> None:
        from humantag.workers.labelers.cpu.ssd import PersonNet

        self.net = PersonNet()
        self.side = side
        self.tiles = tiles
        self.look_again = False

    def find(self, rgb: np.ndarray) -> list[Detection]:
        from humantag.workers.labelers.cpu.ssd import TRAIN_SIDE

        height, width = rgb.shape[:2]
        square = cv2.resize(rgb, (TRAIN_SIDE, TRAIN_SIDE), interpolation=cv2.INTER_AREA)
        sx, sy = width / TRAIN_SIDE, height / TRAIN_SIDE
        large = [Detection(d.x * sx, d.y * sy, d.w * sx, d.h * sy, d.score, d.kind) for d in self.net.detect(square, EVIDENCE_FLOOR)]
        small: list[Detection] = []
        if self.side and max(height, width) > TRAIN_SIDE:
            factor = min(1.0, self.side / max(height, width))
            sized = rgb if factor == 1.0 else cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            if self.tiles:
                found = [d for d in self.net.detect_tiles(sized, EVIDENCE_FLOOR) if d.h <= SSD_SMALL_PERSON_MAX * TRAIN_SIDE]
            else:
                found = self.net.detect(sized, EVIDENCE_FLOOR, layers=SSD_SMALL_PEOPLE_LAYERS, skip_corner=True)
            # A tile sees only part of a large person: such fragments lie inside that person's
            # box from the whole-image pass and are dropped (else one portrait counts as several).
            people = [d for d in large if d.score >= SSD_FRAGMENT_OWNER_SCORE]
            small = [d.scaled(1.0 / factor) for d in found]
            small = [d for d in small if not any(_inside(d, p) for p in people)]
        return large + small

    def find_closer(self, rgb: np.ndarray) -> list[Detection]:
        return []


class CnnDetectors:
    """One instance per thread: an OpenCV network is not safe to share between threads."""

    def __init__(
        self,
        body_net: BodyNetName = "yolov4-tiny",
        body_side: int = 832,
        min_face: float = 16.0,
        body_tiles: bool = True,
        look_again: bool = True,
        someone_at: tuple[float, float] = (0.5, 0.3),
        precision: Precision = "auto",
    ) -> None:
        self.precision = resolve_precision(precision)
        if body_net == "yolov4-tiny":
            self.bodies: YoloBodies | SsdBodies = YoloBodies(body_side, look_again, self.precision)
        else:
            self.bodies = SsdBodies(body_side, body_tiles)
        from humantag.workers.labelers.cpu.mtcnn import FaceNet  # torch: imported only when the CNN set is used

        self.faces = FaceNet(min_face)
        self.someone_at = someone_at  # (face, body) scores counted as a person: found one, no closer look

    def find_bodies(self, rgb: np.ndarray, faces: list[Detection]) -> list[Detection]:
        found = self.bodies.find(rgb)
        face_at, body_at = self.someone_at
        if self.bodies.look_again and not any(d.score >= face_at for d in faces) and not any(d.score >= body_at for d in found):
            found += self.bodies.find_closer(rgb)
        return nms(found, BODY_NMS_IOU)

    def find(self, rgb: np.ndarray, gray: np.ndarray, bodies: bool = True) -> Found:
        faces = suppress_duplicates(self.faces.detect(rgb, EVIDENCE_FLOOR), 0.3) if min(rgb.shape[:2]) >= 12 else []
        return Found(faces=faces, bodies=self.find_bodies(rgb, faces) if bodies else [])
