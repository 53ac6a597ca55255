"""Name the dominant colour of a clothing region with the schema's `Color` words.

Each pixel gets a name from fixed HSV ranges; the region's colour is the name
most pixels share (at least 40 %), "multicolor" when three or more names each
hold 15 %, otherwise unknown. In a greyscale photo only black and white are
named: a mid-grey there could have been any colour.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from humantag.workers.attributes import Color

# OpenCV hue runs 0..179; (upper bound exclusive, name).
_HUES: tuple[tuple[int, str], ...] = (
    (5, "red"), (20, "orange"), (33, "yellow"), (85, "green"), (128, "blue"),
    (148, "purple"), (168, "pink"), (180, "red"),
)
DOMINANT_SHARE = 0.40
MULTICOLOR_SHARE = 0.15
# Every name a pixel can get, in alphabetical order: a pixel holds its name's index (counted with bincount).
NAMES: tuple[str, ...] = tuple(sorted({name for _, name in _HUES} | {"gray", "brown", "beige", "white", "black"}))
_CODE = {name: index for index, name in enumerate(NAMES)}


def pixel_names(hsv: np.ndarray) -> np.ndarray:
    """One colour name per pixel of an HSV (OpenCV ranges) array, as its index in NAMES (uint8)."""
    h = hsv[..., 0].astype(np.int16)
    s = hsv[..., 1].astype(np.int16)
    v = hsv[..., 2].astype(np.int16)
    names = np.full(h.shape, _CODE["gray"], dtype=np.uint8)
    chromatic = s >= 50
    lower = 0
    for upper, name in _HUES:
        names[chromatic & (h >= lower) & (h < upper)] = _CODE[name]
        lower = upper
    warm = chromatic & ((h < 25) | (h >= 170))
    names[warm & (v < 130)] = _CODE["brown"]
    names[(h >= 8) & (h < 30) & (s >= 25) & (s < 90) & (v >= 150)] = _CODE["beige"]
    names[chromatic & ((h < 5) | (h >= 168)) & (s < 120) & (v >= 180)] = _CODE["pink"]
    names[(~chromatic) & (v >= 200)] = _CODE["white"]
    names[v < 55] = _CODE["black"]
    return names


def is_grayscale(rgb: np.ndarray) -> bool:
    sample = rgb[::4, ::4].astype(np.int16)
    return bool(np.abs(sample[..., 0] - sample[..., 1]).max() <= 8 and np.abs(sample[..., 1] - sample[..., 2]).max() <= 8)


def dominant_color(region_rgb: np.ndarray, grayscale: bool) -> tuple[Optional[Color], Optional[float]]:
    """(name, share of pixels behind it) or (None, None) when the region says nothing clear."""
    if region_rgb.size == 0:
        return None, None
    hsv = cv2.cvtColor(np.ascontiguousarray(region_rgb), cv2.COLOR_RGB2HSV)
    counts = np.bincount(pixel_names(hsv).ravel(), minlength=len(NAMES))
    present = np.flatnonzero(counts)  # the names seen, alphabetical (as np.unique of the names gave them)
    names, counts = np.array(NAMES)[present], counts[present]
    shares = counts / counts.sum()
    order = np.argsort(shares)[::-1]
    top, share = str(names[order[0]]), float(shares[order[0]])
    if grayscale:
        return (top, share) if top in ("black", "white") and share >= DOMINANT_SHARE else (None, None)  # type: ignore[return-value]
    if share >= DOMINANT_SHARE:
        return top, share  # type: ignore[return-value]
    if int((shares >= MULTICOLOR_SHARE).sum()) >= 3:
        return "multicolor", float(shares[shares >= MULTICOLOR_SHARE].sum())
    return None, None
