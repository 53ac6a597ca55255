"""The `cpu` labeler: OpenCV's shipped detectors, no weights to fetch, ~1 core per replica.

Options (`LabelerOptions.extra`):
- `min_score` (0.5): detections below this score are dropped (scores: detectors.py);
- `detect_side` (320): longer side of the grey copy the detectors scan;
- `scale_factor` (1.2): step between the cascades' pyramid levels;
- `profile_scale` (0.75): the profile-face scan uses a copy this much smaller;
- `detect_people` (true): also run the HOG full-body detector;
- `threads` (1): OpenCV threads per replica (the replica asks Ray for 1 CPU).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

import cv2

from workers.images import DecodedImage
from workers.labelers.base import Labeler, LabelerIdentity, LabelerOptions, LabelOutput, Throughput
from workers.labelers.cpu.analyse import Analysis, ImageAnalyser
from workers.labelers.cpu.caption import compose_caption

log = logging.getLogger(__name__)

CODE_VERSION = "1"


class CpuLabeler(Labeler):
    name = "cpu"
    decode_max_side = 1024
    # The `extra` keys this labeler reads: the gate routes these to its detector, the rest inward.
    OPTION_KEYS = frozenset({"min_score", "detect_side", "profile_scale", "scale_factor", "detect_people", "threads"})

    def __init__(self, options: LabelerOptions | None = None) -> None:
        super().__init__(options)
        extra = self.options.extra
        self.min_score = float(extra.get("min_score", 0.5))
        self.detect_side = int(extra.get("detect_side", 320))
        self.profile_scale = float(extra.get("profile_scale", 0.75))
        self.scale_factor = float(extra.get("scale_factor", 1.2))
        self.detect_people = _flag(extra.get("detect_people", True))
        self.threads = int(extra.get("threads", 1))
        self._analyser: Optional[ImageAnalyser] = None

    def identity(self) -> LabelerIdentity:
        return LabelerIdentity(
            version=f"cpu-{CODE_VERSION}/opencv-{cv2.__version__}/side-{self.detect_side}x{self.profile_scale:g}/step-{self.scale_factor:g}/min-{self.min_score:g}"
        )

    def throughput(self) -> Throughput:
        return Throughput(14.8, "CPU core", "bench/cpu_labeler.py at detect_side=320: 14.8 images/s per core "
                          "(docs/performance.md)")

    def setup(self) -> None:
        cv2.setNumThreads(self.threads)
        self._analyser = ImageAnalyser(
            self.min_score,
            self.detect_side,
            self.detect_people,
            scale_factor=self.scale_factor,
            profile_scale=self.profile_scale,
        )

    def run_info(self) -> dict[str, Any]:
        return {**super().run_info(), "min_score": self.min_score, "detect_side": self.detect_side}

    def analyse(self, image: DecodedImage) -> Analysis:
        if self._analyser is None:
            self.setup()
        assert self._analyser is not None and image.pixels is not None
        return self._analyser.analyse(image.pixels, image.scale)

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        outputs = []
        for image in images:
            started = time.perf_counter()
            try:
                analysis = self.analyse(image)
            except Exception as exc:  # noqa: BLE001 - one bad image is one error row
                log.warning("cpu labeler failed on %s: %s", image.uri, exc)
                outputs.append(LabelOutput.failed("label_error", f"{type(exc).__name__}: {exc}"))
                continue
            outputs.append(analysis_output(analysis, (time.perf_counter() - started) * 1000.0))
        return outputs


def _flag(value: Any) -> bool:
    """A boolean option that may arrive as text from the command line."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def analysis_output(analysis: Analysis, label_ms: Optional[float] = None) -> LabelOutput:
    return LabelOutput(
        caption=compose_caption(analysis.persons, analysis.faces_visible, analysis.quality),
        people_count=len(analysis.persons),
        faces_visible=analysis.faces_visible,
        persons=analysis.persons,
        quality=analysis.quality,
        label_ms=label_ms,
    )
