"""The `cpu` labeler: CNN person and face detectors whose weights ship in registry packages, ~1 core per replica.

Options (`LabelerOptions.extra`, fields of `CpuOptions`): `detectors` ("cnn",
the default, or "haar-hog", the first OpenCV-only set kept for comparison),
`min_score`, `min_body_score`, `body_net`, `body_side`, `look_again`, `body_tiles`, `min_face`,
`precision`, `threads`; the haar-hog set reads `detect_side`, `scale_factor`,
`profile_scale`, `detect_people`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Optional

import cv2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from humantag.workers.images import DecodedImage
from humantag.workers.labelers.base import Labeler, LabelerIdentity, LabelerOptions, LabelOutput, Throughput
from humantag.workers.labelers.cpu.analyse import Analysis, DetectorSet, HaarHogDetectors, ImageAnalyser
from humantag.workers.labelers.cpu.caption import compose_caption
from humantag.workers.labelers.cpu.cnn import BodyNetName
from humantag.workers.labelers.cpu.yolo import Precision, resolve_precision
from humantag.workers.labelers.cpu.weights import MTCNN_FILES, SSDLITE_PERSON, YOLO_WEIGHTS
from humantag.workers.records import ErrorKind

log = logging.getLogger(__name__)

CODE_VERSION = "5"  # 5: precision=auto means int8 where the CPU has VNNI

DetectorSetName = Literal["cnn", "haar-hog"]


class CpuOptions(BaseModel):
    """The cpu labeler's settings, read from `LabelerOptions.extra` (strings from the command line are parsed)."""

    model_config = ConfigDict(extra="ignore")
    detectors: DetectorSetName = Field("cnn", description="cnn: CNN bodies (body_net) + MTCNN faces; haar-hog: OpenCV cascades + HOG")
    min_score: float = Field(0.5, description="faces (haar-hog: all detections) below this score are not counted as persons")
    min_body_score: float = Field(0.3, description="cnn: bodies below this score are not counted as persons (also: at or above it, someone was found and there is no closer look)")
    body_net: BodyNetName = Field("yolov4-tiny", description="cnn: the body detector (ssdlite: the first one, for comparison)")
    body_side: int = Field(832, description="cnn: longer side the body detector sees the image at (ssdlite: of the copy cut into 300 px tiles; 0: off)")
    look_again: bool = Field(True, description="cnn, yolov4-tiny: when nobody was found, look again at 1.5x body_side")
    body_tiles: bool = Field(True, description="cnn, ssdlite: scan the small-people copy as 300 px tiles (false: one pass, lowest layers only)")
    min_face: float = Field(16.0, description="cnn: smallest face searched, in decoded pixels")
    precision: Precision = Field("auto", description="cnn, yolov4-tiny: int8 (8-bit convolutions where the CPU has VNNI; the closer look in bf16/fp32), bf16 (bfloat16, ~0.55x fp32's time where native), fp32, or auto: int8 where VNNI, else bf16 where native, else fp32")
    threads: int = Field(1, description="OpenCV and torch threads per replica (the replica asks Ray for 1 CPU)")
    detect_side: int = Field(320, description="haar-hog: longer side of the grey copy the detectors scan")
    scale_factor: float = Field(1.2, description="haar-hog: step between the cascades' pyramid levels")
    profile_scale: float = Field(0.75, description="haar-hog: the profile-face scan uses a copy this much smaller")
    detect_people: bool = Field(True, description="haar-hog: also run the HOG full-body detector")

    @model_validator(mode="after")
    def _body_side_fits_the_net(self) -> "CpuOptions":
        if self.detectors == "cnn" and self.body_net == "yolov4-tiny" and self.body_side < 32:
            raise ValueError(f"body_side must be at least 32 for yolov4-tiny, got {self.body_side}")
        return self


class CpuLabeler(Labeler):
    name = "cpu"
    decode_max_side = 1024
    # The `extra` keys this labeler reads: the gate routes these to its detector, the rest inward.
    OPTION_KEYS = frozenset(CpuOptions.model_fields)

    def __init__(self, options: LabelerOptions | None = None) -> None:
        super().__init__(options)
        self.settings = CpuOptions.model_validate({k: v for k, v in self.options.extra.items() if k in self.OPTION_KEYS})
        self._analyser: Optional[ImageAnalyser] = None

    @property
    def min_score(self) -> float:
        return self.settings.min_score

    @property
    def detect_side(self) -> int:
        return self.settings.detect_side

    def identity(self) -> LabelerIdentity:
        s = self.settings
        if s.detectors == "haar-hog":
            detail = f"haar-hog/opencv-{cv2.__version__}/side-{s.detect_side}x{s.profile_scale:g}/step-{s.scale_factor:g}"
        else:
            body_weights = YOLO_WEIGHTS if s.body_net == "yolov4-tiny" else SSDLITE_PERSON
            weights = "+".join(sorted({w.version() for w in (body_weights, *MTCNN_FILES.values())}))
            if s.body_net == "yolov4-tiny":
                body = f"{s.body_net}-{s.body_side}{'-look-again' if s.look_again else ''}"
            else:
                body = f"{s.body_net}-{s.body_side}{'-tiles' if s.body_tiles else ''}"
            # The setting, not what `auto` resolves to: the driver (which decides what is stale) and
            # the workers may run on different CPUs. bf16 and fp32 scores differ in the second decimal.
            detail = f"cnn/{weights}/opencv-{cv2.__version__}/{s.precision}/body-{body}-min-{s.min_body_score:g}/face-{s.min_face:g}"
        return LabelerIdentity(version=f"cpu-{CODE_VERSION}/{detail}/min-{s.min_score:g}")

    def throughput(self) -> Throughput:
        if self.settings.detectors == "haar-hog":
            return Throughput(13.0, "CPU core", "bench/cpu_labeler.py, Haar+HOG at 1024x768: ~77 ms per image per core "
                              "(docs/performance.md)")
        if self.settings.body_net == "ssdlite":
            return Throughput(1.9, "CPU core", "bench/cpu_labeler.py, SSDLite + MTCNN at 1024x768: ~522 ms per image "
                              "per core (docs/performance.md)")
        return Throughput(3.4, "CPU core", "bench/cpu_labeler.py, YOLOv4-tiny (int8 where the CPU has VNNI, its closer look "
                          "in bfloat16) + MTCNN at 1024x768, default settings: ~295 ms per image per core (docs/performance.md)")

    def _detectors(self) -> DetectorSet:
        s = self.settings
        if s.detectors == "haar-hog":
            return HaarHogDetectors(s.detect_side, s.detect_people, scale_factor=s.scale_factor, profile_scale=s.profile_scale)
        from humantag.workers.labelers.cpu.cnn import CnnDetectors  # torch is imported only when used

        return CnnDetectors(
            body_net=s.body_net, body_side=s.body_side, min_face=s.min_face, body_tiles=s.body_tiles,
            look_again=s.look_again, someone_at=(s.min_score, s.min_body_score), precision=s.precision,
        )

    def setup(self) -> None:
        """Sets the process's OpenCV/torch threads, then loads the detectors (`load`)."""
        cv2.setNumThreads(self.settings.threads)
        if self.settings.detectors == "cnn":
            import torch

            torch.set_num_threads(self.settings.threads)
        self.load()

    def load(self) -> None:
        """Loads the detectors: a missing or broken weight file fails here, as one line (DetectorUnavailable).

        Touches no process-wide setting, so other threads may call it (the gate's
        detector threads do: changing torch's thread count while another thread
        runs torch deadlocks inside a Ray actor)."""
        s = self.settings
        self._analyser = ImageAnalyser(self._detectors(), s.min_score, s.min_body_score if s.detectors == "cnn" else s.min_score)

    def run_info(self) -> dict[str, Any]:
        s = self.settings
        info = {**super().run_info(), "detectors": s.detectors, "min_score": s.min_score, "min_body_score": s.min_body_score}
        if s.detectors == "cnn":
            info["precision"] = resolve_precision(s.precision)  # what `auto` means on this process's CPU
        return info

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
                outputs.append(LabelOutput.failed(ErrorKind.LABEL_ERROR.value, f"{type(exc).__name__}: {exc}"))
                continue
            outputs.append(analysis_output(analysis, (time.perf_counter() - started) * 1000.0))
        return outputs


def analysis_output(analysis: Analysis, label_ms: Optional[float] = None) -> LabelOutput:
    return LabelOutput(
        caption=compose_caption(analysis.persons, analysis.faces_visible, analysis.quality),
        people_count=len(analysis.persons),
        faces_visible=analysis.faces_visible,
        persons=analysis.persons,
        quality=analysis.quality,
        label_ms=label_ms,
    )
