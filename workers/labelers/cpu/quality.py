"""Image-quality flags from pixels: sharpness (variance of the Laplacian) and exposure.

Sharpness is measured on a copy whose longer side is 512 px, so the figure
does not depend on the resolution the archive happens to store.
"""

from __future__ import annotations

import cv2
import numpy as np

from humantag.workers.attributes import Quality

SHARPNESS_SIDE = 512
BLURRY_BELOW = 50.0  # Laplacian variance; sharp photos score in the hundreds
UNDEREXPOSED_BELOW = 0.2  # mean luminance in [0, 1]
OVEREXPOSED_ABOVE = 0.85
CLIPPED_SHARE = 0.5  # or this share of pixels crushed to black / blown to white
MIN_SIDE_FOR_SHARPNESS = 64


def measure_quality(gray: np.ndarray) -> Quality:
    """`gray` is the uint8 luminance of the decoded image (not equalised)."""
    brightness = float(gray.mean()) / 255.0
    dark = float((gray <= 10).mean())
    bright = float((gray >= 245).mean())
    blurry = sharpness = None
    longest = max(gray.shape)
    if longest >= MIN_SIDE_FOR_SHARPNESS:
        factor = SHARPNESS_SIDE / longest
        sized = gray if factor >= 1 else cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(sized, cv2.CV_32F).var())
        blurry = sharpness < BLURRY_BELOW
    return Quality(
        blurry=blurry,
        underexposed=brightness < UNDEREXPOSED_BELOW or dark > CLIPPED_SHARE,
        overexposed=brightness > OVEREXPOSED_ABOVE or bright > CLIPPED_SHARE,
        sharpness=round(sharpness, 2) if sharpness is not None else None,
        brightness=round(brightness, 4),
    )
