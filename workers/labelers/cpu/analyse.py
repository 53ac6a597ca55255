"""One image in, the persons the detectors see (with attributes), quality and counts out.

Detection is done by a detector set (`CnnDetectors` by default, or the older
`HaarHogDetectors`), which returns every face and body candidate in decoded
pixels. Faces at or above `min_score` and bodies at or above `min_body_score`
become persons: one per face, plus one per body whose upper part holds no
face (so nobody is counted twice).
The strongest face and the strongest body candidate, even below `min_score`,
are the image's `evidence` of a person: the gate decides on them with its own
thresholds.

Thumbnails (longer side under THUMBNAIL_SIDE) are usually a tight crop of one
face: they get a replicated border (detectors need a little context around a
face) and are enlarged to THUMBNAIL_SIDE. Boxes are returned in the source
image's pixel coordinates (EXIF-rotated, before any decode downscale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol

import cv2
import numpy as np

from humantag.workers.attributes import Box, Person, PersonConfidence, Quality
from humantag.workers.labelers.cpu.color import dominant_color, is_grayscale
from humantag.workers.labelers.cpu.detectors import Detection, FaceDetector, Found, PersonDetector, load_cascade
from humantag.workers.labelers.cpu.quality import measure_quality

THUMBNAIL_SIDE = 128
THUMBNAIL_BORDER = 0.15  # of the shorter side, on each edge
SMILE_FACE_SIDE = 120
SMILE_MIN_NEIGHBORS = 130  # below this the smile cascade can't tell; smiling stays unknown
BODY_FACE_ZONE = 0.45  # a face centre in the top 45 % of a body box is that body's face


class DetectorSet(Protocol):
    def find(self, rgb: np.ndarray, gray: np.ndarray, bodies: bool = True) -> Found: ...


@dataclass(frozen=True)
class Evidence:
    """The strongest face and the strongest body candidate (0 when none): what the gate decides on.

    Kept apart because the two networks' scores mean different things: on the
    development scenes MTCNN scores false faces in fur and foam up to ~0.97,
    while YOLO gives almost no body in an empty image a score (docs/cpu-labeler.md)."""

    face: float
    body: float

    @classmethod
    def of(cls, found: Found) -> "Evidence":
        return cls(
            round(float(max((d.score for d in found.faces), default=0.0)), 4),
            round(float(max((d.score for d in found.bodies), default=0.0)), 4),
        )


@dataclass
class Analysis:
    persons: list[Person]
    faces_visible: int
    quality: Quality
    evidence: Evidence


class HaarHogDetectors:
    """The first detector set: OpenCV's Haar face cascades and HOG people on a small grey copy."""

    def __init__(self, detect_side: int = 320, people: bool = True, scale_factor: float = 1.2, profile_scale: float = 0.75) -> None:
        self.detect_side = detect_side
        self.faces = FaceDetector(scale_factor=scale_factor, profile_scale=profile_scale)
        self.bodies = PersonDetector() if people else None

    def find(self, rgb: np.ndarray, gray: np.ndarray, bodies: bool = True) -> Found:
        factor = min(1.0, self.detect_side / max(gray.shape))
        small = gray if factor == 1.0 else cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        faces = [d.scaled(1 / factor) for d in self.faces.detect(small)]
        found = [d.scaled(1 / factor) for d in self.bodies.detect(small)] if bodies and self.bodies is not None else []
        return Found(faces, found)


def _thumbnail(rgb: np.ndarray) -> tuple[np.ndarray, float, int]:
    """A tiny image framed for detection: (enlarged copy with border, factor, border px)."""
    border = max(1, round(THUMBNAIL_BORDER * min(rgb.shape[:2])))
    padded = cv2.copyMakeBorder(rgb, border, border, border, border, cv2.BORDER_REPLICATE)
    factor = THUMBNAIL_SIDE / max(padded.shape[:2])
    return cv2.resize(padded, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR), factor, border


def _to_pixels(det: Detection, factor: float, border: int, width: int, height: int) -> Detection:
    x, y = det.x / factor - border, det.y / factor - border
    x2, y2 = min(width, x + det.w / factor), min(height, y + det.h / factor)
    x, y = max(0.0, x), max(0.0, y)
    return Detection(x, y, max(1.0, x2 - x), max(1.0, y2 - y), det.score, det.kind)


class ImageAnalyser:
    def __init__(self, detectors: DetectorSet, min_score: float = 0.5, min_body_score: float = 0.5) -> None:
        self.detectors = detectors
        self.min_score = min_score  # faces
        self.min_body_score = min_body_score
        self.smile = load_cascade("haarcascade_smile.xml")

    def find(self, rgb: np.ndarray, gray: np.ndarray) -> Found:
        """All candidates in `rgb`'s pixels; tiny images are framed and enlarged first."""
        height, width = rgb.shape[:2]
        if max(height, width) >= THUMBNAIL_SIDE:
            return self.detectors.find(rgb, gray)
        framed, factor, border = _thumbnail(rgb)
        framed_gray = cv2.equalizeHist(cv2.cvtColor(framed, cv2.COLOR_RGB2GRAY))
        # A thumbnail is a face crop: a "body" there would be the face again.
        found = self.detectors.find(framed, framed_gray, bodies=False)
        return Found([_to_pixels(d, factor, border, width, height) for d in found.faces], [])

    def analyse(self, rgb: np.ndarray, scale: float = 1.0) -> Analysis:
        """`rgb` is HxWx3 uint8; `scale` is decoded-pixels per source pixel (DecodedImage.scale)."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        quality = measure_quality(gray)
        found = self.find(rgb, gray)
        faces = [d for d in found.faces if d.score >= self.min_score]
        bodies = [d for d in found.bodies if d.score >= self.min_body_score]
        grayscale = is_grayscale(rgb)
        persons = [self._face_person(face, gray, rgb, grayscale, scale) for face in faces]
        for body in bodies:
            owner = next((i for i, f in enumerate(faces) if _face_in_body(f, body) and persons[i].person_box is None), None)
            if owner is not None:
                persons[owner].person_box = _box(body, scale)
            elif not any(_face_in_body(f, body) for f in faces):
                persons.append(self._body_person(body, rgb, grayscale, scale))
        order = sorted(range(len(persons)), key=lambda i: _left(persons[i]))
        return Analysis([persons[i] for i in order], len(faces), quality, Evidence.of(found))

    def _face_person(self, face: Detection, gray: np.ndarray, rgb: np.ndarray, grayscale: bool, scale: float) -> Person:
        smiling, smile_conf = self._smiling(face, gray) if face.kind == "frontal" else (None, None)
        region = _clothing_region_below_face(face, rgb.shape[1], rgb.shape[0])
        color, color_conf = dominant_color(_crop(rgb, region), grayscale) if region else (None, None)
        return Person(
            face_box=_box(face, scale),
            face_visible=True,
            smiling=smiling,
            upper_clothing_color=color,
            confidence=PersonConfidence(
                face_visible=round(face.score, 4),
                smiling=smile_conf,
                upper_clothing_color=round(color_conf, 4) if color_conf is not None else None,
            ),
        )

    def _body_person(self, body: Detection, rgb: np.ndarray, grayscale: bool, scale: float) -> Person:
        region = (body.x + 0.2 * body.w, body.y + 0.2 * body.h, 0.6 * body.w, 0.25 * body.h)
        color, color_conf = dominant_color(_crop(rgb, region), grayscale)
        return Person(
            person_box=_box(body, scale),
            upper_clothing_color=color,
            confidence=PersonConfidence(upper_clothing_color=round(color_conf, 4) if color_conf is not None else None),
        )

    def _smiling(self, face: Detection, gray: np.ndarray) -> tuple[Optional[bool], Optional[float]]:
        crop = _crop(gray, (face.x, face.y, face.w, face.h))
        if crop.size == 0:
            return None, None
        sized = cv2.equalizeHist(cv2.resize(crop, (SMILE_FACE_SIDE, SMILE_FACE_SIDE), interpolation=cv2.INTER_AREA))
        _, neighbors = self.smile.detectMultiScale2(sized[SMILE_FACE_SIDE // 2 :], scaleFactor=1.1, minNeighbors=3, minSize=(25, 12))
        strongest = int(np.max(neighbors)) if len(neighbors) else 0
        if strongest < SMILE_MIN_NEIGHBORS:
            # The smile cascade misses many real smiles: its silence is not evidence of "not smiling".
            return None, None
        return True, round(1.0 - math.exp(-strongest / 100.0), 4)


def _face_in_body(face: Detection, body: Detection) -> bool:
    """The face is this body's: its centre lies over the box and in its upper part, or up to one
    face height above the box (in close-ups the body detector also boxes the torso below the head)."""
    cx, cy = face.center
    return body.x <= cx <= body.x + body.w and body.y - face.h <= cy <= body.y + BODY_FACE_ZONE * body.h


def _clothing_region_below_face(face: Detection, width: int, height: int) -> Optional[tuple[float, float, float, float]]:
    """The chest, from face-box units (a Haar box spans brows to chin, ~3/4 of the head):
    1.4 face-widths wide, 2.0 to 2.9 face-heights below the box top, which skips
    the neck and collar. None when less than a quarter of it is in the frame."""
    cx = face.x + face.w / 2
    region = (cx - 0.7 * face.w, face.y + 2.0 * face.h, 1.4 * face.w, 0.9 * face.h)
    x1, y1 = max(0.0, region[0]), max(0.0, region[1])
    x2, y2 = min(float(width), region[0] + region[2]), min(float(height), region[1] + region[3])
    if x2 <= x1 or y2 <= y1 or (x2 - x1) * (y2 - y1) < 0.25 * region[2] * region[3]:
        return None
    return (x1, y1, x2 - x1, y2 - y1)


def _crop(array: np.ndarray, region: tuple[float, float, float, float]) -> np.ndarray:
    x, y, w, h = region
    x1, y1 = max(0, int(round(x))), max(0, int(round(y)))
    return array[y1 : max(y1, int(round(y + h))), x1 : max(x1, int(round(x + w)))]


def _box(det: Detection, scale: float) -> Box:
    inv = 1.0 / scale if scale > 0 else 1.0
    return Box(
        x=int(round(det.x * inv)), y=int(round(det.y * inv)),
        w=int(round(det.w * inv)), h=int(round(det.h * inv)),
        score=round(det.score, 4),
    )


def _left(person: Person) -> int:
    box = person.face_box or person.person_box
    return box.x if box is not None else 0
