"""MTCNN's exact speed-ups (mtcnn.py): they must give the plain computation's numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from humantag.workers.devset import make_scene
from humantag.workers.labelers.cpu.mtcnn import STAGE_THRESHOLDS, PNet, PNetScanner, _load, _tensor, area_levels


def _sizes(rgb: np.ndarray) -> list[tuple[int, int]]:
    height, width = rgb.shape[:2]
    return [(int(width * s + 1), int(height * s + 1)) for s in 0.75 * 0.709 ** np.arange(12)]


def test_the_pyramid_levels_are_opencvs_area_resizes() -> None:
    """The small levels come from an integral image: OpenCV's pixels, but for rare .5 ties."""
    rgb = make_scene(4, seed=1).rgb
    sizes = _sizes(rgb)
    for size, level in zip(sizes, area_levels(rgb, sizes)):
        expected = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        assert level.shape == expected.shape and level.dtype == np.uint8
        difference = np.abs(level.astype(np.int16) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3, size


@pytest.mark.parametrize("index", [2, 4])
def test_the_pnet_scanner_gives_pnets_numbers(index: int) -> None:
    """Folded input scaling, a one-channel face head and box regression only where a face passes:
    the same windows, probabilities and boxes as PNet's two full heads and softmax."""
    pnet = _load(PNet(), "pnet")
    scanner = PNetScanner(pnet)
    rgb = make_scene(index, seed=1).rgb
    passed = 0
    with torch.inference_mode():
        for level in area_levels(rgb, _sizes(rgb)):
            reg, prob = pnet(_tensor(level))
            face = prob[0, 1].numpy()
            ys, xs, found, boxes = scanner.scan(level)
            expected_ys, expected_xs = np.nonzero(face >= STAGE_THRESHOLDS[0])
            assert (ys.tolist(), xs.tolist()) == (expected_ys.tolist(), expected_xs.tolist())
            np.testing.assert_allclose(found, face[ys, xs], atol=1e-5)
            np.testing.assert_allclose(boxes, reg[0].numpy()[:, ys, xs].T, atol=1e-4)
            passed += len(ys)
    assert passed > 0, "the scene should have windows PNet passes"
