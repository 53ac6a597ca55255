"""The person gate: the `cpu` detectors decide which images the expensive labeler sees.

A gate is built for recall: a false positive costs a little GPU time, a false
negative loses the image's labels for good. So it decides on the image's
evidence of any person (`Analysis.evidence`: the best face and the best body
candidate, even below the cpu labeler's own `min_score`) against its own,
lower thresholds, one per kind (`GateThresholds`). Images below both never
reach the inner labeler: their row is the detector's own result with
`gated=True`. Every row the gate writes records why: `gate_score` and
`gate_detector` ("face"/"body"), the candidate that decided.
Images with people go to the inner labeler; the detected boxes become the
persons' boxes of its output (matched by overlap when the inner labeler gave
boxes, else left to right, the order the detector lists persons in).

Options (`LabelerOptions.extra`): `gate_face_threshold` and `gate_body_threshold`
(GateThresholds), `gate_inner`
("humanvlm"), `gate_workers` (DEFAULT_WORKERS: detector threads, each with its
own networks); the cpu labeler's own keys (`CpuLabeler.OPTION_KEYS`, e.g.
`min_score`) go to the detector, every other key to the inner labeler;
`gate_pass_rate` (1.0): the share of images expected to reach the inner labeler,
for `--dry-run` estimates only. The replica asks Ray for max(inner CPUs,
gate_workers) CPUs. The run summary
counts saved images from the rows (`gated=True`), so the figure survives
reruns and resumed runs; `run_info()` records the gate's settings.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Union

from humantag.workers.attributes import Box, Person
from humantag.workers.images import DecodedImage
from humantag.workers.labelers.base import Labeler, LabelerIdentity, LabelerOptions, LabelOutput, Placement, Throughput
from humantag.workers.labelers.cpu import CpuLabeler
from humantag.workers.labelers.cpu.analyse import Analysis, Evidence
from humantag.workers.labelers.cpu.labeler import analysis_output
from humantag.workers.records import ErrorKind, GateDetector

log = logging.getLogger(__name__)

DEFAULT_INNER = "humanvlm"

@dataclass(frozen=True)
class GateThresholds:
    """An image passes when its best face or its best body candidate reaches that kind's threshold.

    Chosen on development scenes of seeds 1 and 2, checked on seed 3 and the
    three real no-person photos (docs/cpu-labeler.md), recall first: MTCNN
    scores false faces in fur and foam up to ~0.97, so a face must reach 0.5
    (0.7 would hold back more empty scenes but pass fewer with people); YOLO
    rarely reports a body in an empty image (the real cat photo: 0.07), so a
    weak body (0.1) opens the gate."""

    face: float = 0.5
    body: float = 0.1

    def decide(self, evidence: Evidence) -> tuple[bool, float, Optional[GateDetector]]:
        """(passed, score, kind) of the deciding candidate: when it passed, the stronger of the kinds
        that reached their threshold (a face on a tie); else the one nearest its threshold;
        (False, 0.0, None) when there was no candidate at all."""
        passing = [(score, kind == "face", kind) for score, kind, at in self._kinds(evidence) if score >= at]
        if passing:
            score, _, kind = max(passing)
            return True, score, kind  # type: ignore[return-value]
        ratio, score, kind = max((score / at, score, kind) for score, kind, at in self._kinds(evidence))
        return (False, score, kind) if score > 0.0 else (False, 0.0, None)  # type: ignore[return-value]

    def _kinds(self, evidence: Evidence) -> list[tuple[float, str, float]]:
        return [(evidence.face, "face", self.face), (evidence.body, "body", self.body)]

    def version(self) -> str:
        return f"gate-face-{self.face:g}-body-{self.body:g}"


GATE_KEYS = frozenset({"gate_face_threshold", "gate_body_threshold", "gate_inner", "gate_workers", "gate_pass_rate"})
# With 2, a `humantag run --labeler gate` on this 2-CPU machine once hung with the SSDLite set
# (cause not established). Since the detectors stopped setting torch's thread count per thread
# (CpuLabeler.load), 6 runs of 96 images with 2 workers (YOLO and SSDLite bodies) finished, at
# 4.3 against 2.8 images/s with 1 (docs/cpu-labeler.md). One until a hang is ruled out.
DEFAULT_WORKERS = 1
DEFAULT_PASS_RATE = 1.0  # no assumption: every image may have people


class GateLabeler(Labeler):
    name = "gate"

    def __init__(self, options: LabelerOptions | None = None) -> None:
        super().__init__(options)
        from humantag.workers.labelers import create_labeler  # the registry imports this module lazily

        extra = dict(self.options.extra)
        unknown = sorted(k for k in extra if k.startswith("gate_") and k not in GATE_KEYS)
        if unknown:
            raise ValueError(f"unknown gate option {', '.join(unknown)} (known: {', '.join(sorted(GATE_KEYS))})")
        defaults = GateThresholds()
        self.thresholds = GateThresholds(
            face=float(extra.pop("gate_face_threshold", defaults.face)),
            body=float(extra.pop("gate_body_threshold", defaults.body)),
        )
        if not (self.thresholds.face > 0.0 and self.thresholds.body > 0.0):  # above 1: that kind never opens it
            raise ValueError(f"gate thresholds must be above 0, got face {self.thresholds.face:g}, body {self.thresholds.body:g}")
        self.inner_name = str(extra.pop("gate_inner", DEFAULT_INNER))
        self.workers = max(1, int(extra.pop("gate_workers", DEFAULT_WORKERS)))
        self.pass_rate = float(extra.pop("gate_pass_rate", DEFAULT_PASS_RATE))
        if not 0.0 < self.pass_rate <= 1.0:
            raise ValueError(f"gate_pass_rate must be in (0, 1], got {self.pass_rate:g}")
        if self.inner_name == self.name:
            raise ValueError("the gate cannot wrap itself")
        detector_extra = {k: v for k, v in extra.items() if k in CpuLabeler.OPTION_KEYS}
        inner_extra = {k: v for k, v in extra.items() if k not in CpuLabeler.OPTION_KEYS}
        self._detector_options = self.options.model_copy(update={"extra": detector_extra})
        self.detector = CpuLabeler(self._detector_options)
        self._local = threading.local()
        self._pool: Optional[ThreadPoolExecutor] = None
        self.inner = create_labeler(self.inner_name, self.options.model_copy(update={"extra": inner_extra}))
        # The inner labeler decides how large its pixels must be; the detector shrinks its own copy.
        self.decode_max_side = self.inner.decode_max_side  # type: ignore[misc]

    def identity(self) -> LabelerIdentity:
        return LabelerIdentity(f"{self.thresholds.version()}/{self.detector.version}+{self.inner_name}:{self.inner.version}")

    @property
    def gated_version(self) -> str:
        """The version of gated rows: the detector's, and the thresholds that skipped them."""
        return f"{self.detector.version}/{self.thresholds.version()}"

    def current_identities(self) -> tuple[LabelerIdentity, ...]:
        """Gated rows carry `gated_version` (so new thresholds make them stale), the others the
        inner labeler's identities; rows of images that failed to decode carry the gate's own."""
        return (self.identity(), LabelerIdentity(self.gated_version), *self.inner.current_identities())

    def throughput(self) -> Optional[Throughput]:
        """The inner labeler's rate over the share of images that pass; the detector runs on
        `gate_workers` CPU cores beside it and bounds the rate too."""
        inner, detector = self.inner.throughput(), self.detector.throughput()
        if inner is None or detector is None:
            return None
        rate = min(inner.images_per_second / self.pass_rate, detector.images_per_second * self.workers)
        return Throughput(
            rate, inner.accelerator,
            f"{self.inner_name}: {inner.images_per_second:.3g} images/s ({inner.source}) / pass rate "
            f"{self.pass_rate:.0%} (-L gate_pass_rate), at most {self.workers} detector cores x "
            f"{detector.images_per_second:.3g} images/s ({detector.source})",
        )

    def setup(self) -> None:
        self.detector.setup()  # fails here, not mid-batch, if the detectors can't load
        self._local.detector = self.detector
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gate-detector")
        self.inner.setup()

    def default_placement(self) -> Placement:
        inner = self.inner.default_placement()
        return Placement(num_cpus=max(inner.num_cpus, float(self.workers)), num_gpus=inner.num_gpus)

    def _thread_detector(self) -> CpuLabeler:
        """OpenCV networks and cascades are not safe to share between threads: one detector per thread."""
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = CpuLabeler(self._detector_options)
            detector.load()  # the process-wide thread settings were made once, in setup()
            self._local.detector = detector
        return detector

    def _detect(self, image: DecodedImage) -> Union[tuple[Analysis, float], LabelOutput]:
        started = time.perf_counter()
        try:
            analysis = self._thread_detector().analyse(image)
        except Exception as exc:  # noqa: BLE001 - one bad image is one error row
            return LabelOutput.failed(ErrorKind.LABEL_ERROR.value, f"gate detector: {type(exc).__name__}: {exc}")
        return analysis, (time.perf_counter() - started) * 1000.0

    def run_info(self) -> dict[str, Any]:
        return {
            **self.inner.run_info(),
            "gate_face_threshold": self.thresholds.face,
            "gate_body_threshold": self.thresholds.body,
            "gate_inner": self.inner_name,
            "gate_detector": self.detector.version,
            "gate_workers": self.workers,
        }

    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        outputs: list[Optional[LabelOutput]] = [None] * len(images)
        analyses: dict[int, Analysis] = {}
        detect_ms: dict[int, float] = {}
        results = list(self._pool.map(self._detect, images)) if self._pool else [self._detect(img) for img in images]
        for i, result in enumerate(results):
            if isinstance(result, LabelOutput):
                outputs[i] = result
                continue
            analysis, detect_ms[i] = result
            passed, score, kind = self.thresholds.decide(analysis.evidence)
            if passed:
                analyses[i] = analysis
            else:
                out = analysis_output(analysis, detect_ms[i])
                out.gated = True
                out.gate_score, out.gate_detector = score, kind
                out.labeler, out.labeler_version = self.detector.name, self.gated_version
                outputs[i] = out
        passed = sorted(analyses)
        if passed:
            try:
                inner_outputs = self.inner.label_with_persons(
                    [images[i] for i in passed], [analyses[i].persons for i in passed]
                )
            except Exception as exc:  # noqa: BLE001 - the gated rows of this batch are still good
                log.exception("%s failed on a batch of %d", self.inner_name, len(passed))
                inner_outputs = [LabelOutput.failed(ErrorKind.LABEL_ERROR.value, f"{type(exc).__name__}: {exc}") for _ in passed]
            if len(inner_outputs) != len(passed):
                raise RuntimeError(f"{self.inner_name} returned {len(inner_outputs)} results for {len(passed)} images")
            for i, inner in zip(passed, inner_outputs):
                outputs[i] = self._combine(inner, analyses[i], detect_ms[i])
        return [out for out in outputs if out is not None]

    def _combine(self, inner: LabelOutput, analysis: Analysis, detect_ms: float) -> LabelOutput:
        inner.gated = False
        _, inner.gate_score, inner.gate_detector = self.thresholds.decide(analysis.evidence)
        inner.labeler = inner.labeler or self.inner.name
        inner.labeler_version = inner.labeler_version or self.inner.version
        inner.label_ms = (inner.label_ms or 0.0) + detect_ms
        if inner.error_kind:
            return inner
        detected = analysis.persons
        if inner.persons is None:
            inner.persons = [p.model_copy(deep=True) for p in detected]
        else:
            attach_boxes(inner.persons, detected)
        if inner.people_count is None:
            inner.people_count = len(inner.persons)
        if inner.faces_visible is None:
            inner.faces_visible = analysis.faces_visible
        if inner.quality is None:
            inner.quality = analysis.quality
        return inner


def _iou(a: Box, b: Box) -> float:
    x1, y1 = max(a.x, b.x), max(a.y, b.y)
    x2, y2 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def _any_box(person: Person) -> Optional[Box]:
    return person.face_box or person.person_box


def attach_boxes(persons: list[Person], detected: list[Person]) -> None:
    """Give `persons` (from the inner labeler) the detector's boxes, in place.

    A person that already has a box keeps it and claims the detected person it
    overlaps most; the others take the remaining detections left to right.
    The inner labeler's list stays authoritative: a detection it did not
    mention is left out (its count and attributes describe its own list).
    """
    remaining = list(range(len(detected)))
    for person in persons:
        own = _any_box(person)
        if own is None or not remaining:
            continue
        best = max(remaining, key=lambda j: _iou(own, _any_box(detected[j]) or own))
        if _iou(own, _any_box(detected[best]) or own) > 0:
            _copy_boxes(person, detected[best])
            remaining.remove(best)
    for person in persons:
        if _any_box(person) is None and remaining:
            _copy_boxes(person, detected[remaining.pop(0)])


def _copy_boxes(person: Person, source: Person) -> None:
    person.face_box = person.face_box or source.face_box
    person.person_box = person.person_box or source.person_box
