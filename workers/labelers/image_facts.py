"""The cheapest real labeler: facts about the pixels, no model.

Width/height (after EXIF rotation), format and mode come from decoding; this
adds a 64-bit perceptual hash (DCT pHash, via imagehash) for near-duplicate
search. The image is box-reduced to at most 256 px before hashing: pHash only
looks at a 32x32 thumbnail, and Lanczos over the full frame costs ~10 ms. Used by the backbone's tests and benchmark, and as a smoke test of a
deployment before any weights are involved.
"""

from __future__ import annotations

import time

import imagehash
from PIL import Image

from humantag.workers.images import DecodedImage
from humantag.workers.labelers.base import Labeler, LabelerIdentity, LabelOutput, Throughput


class ImageFactsLabeler(Labeler):
    name = "image-facts"

    def identity(self) -> LabelerIdentity:
        return LabelerIdentity(version=f"image-facts/imagehash-{imagehash.__version__}")

    def throughput(self) -> Throughput:
        return Throughput(218.0, "CPU core", "bench/pipeline_throughput.py: 218 images/s end to end, one replica, "
                          "decoding on a second core (docs/performance.md)")

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        outputs = []
        for image in images:
            started = time.perf_counter()
            try:
                phash = str(imagehash.phash(_thumbnail(image.pil())))
            except Exception as exc:  # noqa: BLE001 - one bad image is one error row
                outputs.append(LabelOutput.failed("label_error", f"{type(exc).__name__}: {exc}"))
                continue
            outputs.append(LabelOutput(facts={"phash": phash}, label_ms=(time.perf_counter() - started) * 1000))
        return outputs


def _thumbnail(img: Image.Image, side: int = 256) -> Image.Image:
    factor = max(img.size) // side
    return img.reduce(factor) if factor > 1 else img
