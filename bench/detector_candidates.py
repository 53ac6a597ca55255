"""Detector candidates side by side on the development scenes (workers/devset.py), in one run.

    python bench/detector_candidates.py [--scenes 120] [--seed 1] [--candidates yolo,ssdlite,...]

Scenes: people cut out of the devset portraits, pasted at 40-150 px into the
no-person photos (1-10 per scene, every 6th scene empty), faces shown, blurred
or covered, mirrored, grey and rotated copies; the answers are known by
construction. Every candidate sees the same JPEG-decoded pixels. Reported per
candidate:
- bodies: box recall by pasted height and precision (IoU >= 0.3 with a pasted
  person's box) at the labeler's min_body_score;
- faces: recall of faces >= 24 px and precision (a box containing a labeled
  face centre), boxes on smaller labeled faces not counted;
- gate: recall of images with people and share of empty images held back, at
  the gate's thresholds (GateThresholds) and around them;
- people_count within +-1, and CPU ms per image (one thread).
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from humantag.flows.evaluation import evaluate
from humantag.workers.devset import make_scene
from humantag.workers.images import DecodedImage, decode_image
from humantag.workers.labelers import LabelerOptions
from humantag.workers.labelers.cpu.analyse import Analysis
from humantag.workers.labelers.cpu.detectors import Detection, iou
from humantag.workers.labelers.cpu.labeler import CpuLabeler, analysis_output
from humantag.workers.labelers.gate import GateThresholds

log = logging.getLogger("bench.detector_candidates")

CANDIDATES: dict[str, dict[str, object]] = {
    "yolo": {},  # the default: YOLOv4-tiny at 832 px, a closer look when nobody was found; MTCNN from 16 px
    "yolo-bf16": {"precision": "bf16"},  # YOLOv4-tiny in bfloat16 (the default before int8)
    "yolo-int8": {"precision": "int8"},  # first pass in int8 (darknet_int8.py), closer look bf16: the default where the CPU has VNNI
    "yolo-fp32": {"precision": "fp32"},  # the default in float32 (OpenCV's Darknet reader), as it was until 2026-12-02 evening
    "yolo-body-0.2": {"min_body_score": 0.2},  # count weaker bodies as people
    "yolo-one-look": {"look_again": False},
    "yolo-736": {"body_side": 736},
    "yolo-fast": {"body_side": 704, "min_face": 20, "look_again": False},  # the cheaper settings docs/cpu-labeler.md names
    "ssdlite": {"body_net": "ssdlite", "body_side": 768, "min_body_score": 0.5},  # the first CNN: squashed pass + 300 px tiles of a 768 px copy
    "haar-hog": {"detectors": "haar-hog"},
    "haar-hog-768": {"detectors": "haar-hog", "detect_side": 768},
}
GATE_GRID = [GateThresholds(face, body) for face in (0.3, 0.5, 0.7) for body in (0.05, 0.1, 0.2, 0.3)]


@dataclass
class Result:
    analysis: Analysis
    cpu_ms: float


def scenes(count: int, seed: int) -> tuple[list[DecodedImage], list[dict]]:
    images, labels = [], []
    for index in range(count):
        scene = make_scene(index, seed)
        buffer = io.BytesIO()
        Image.fromarray(scene.rgb).save(buffer, "JPEG", quality=92)
        images.append(decode_image(buffer.getvalue(), DecodedImage(uri=f"dev/{scene.name}"), max_side=CpuLabeler.decode_max_side))
        labels.append(scene.label())
    return images, labels


def body_scores(results: list[Result], labels: list[dict]) -> tuple[dict[str, str], float]:
    hits: dict[int, int] = {}
    total: dict[int, int] = {}
    predicted = matched = 0
    for result, label in zip(results, labels):
        boxes = [p.person_box for p in result.analysis.persons if p.person_box is not None]
        dets = [Detection(b.x, b.y, b.w, b.h, b.score or 0.0, "body") for b in boxes]
        predicted += len(dets)
        used: set[int] = set()
        for x, y, w, h in label["person_boxes"]:
            bucket = min(h // 40, 3)
            total[bucket] = total.get(bucket, 0) + 1
            truth = Detection(x, y, w, h, 1.0, "body")
            best = max(((iou(truth, d), j) for j, d in enumerate(dets) if j not in used), default=(0.0, -1))
            if best[0] >= 0.3:
                used.add(best[1])
                hits[bucket] = hits.get(bucket, 0) + 1
                matched += 1
    by_height = {f"{40 * k}-{40 * k + 39}px" if k < 3 else "120px+": f"{hits.get(k, 0)}/{total[k]}" for k in sorted(total)}
    return by_height, (matched / predicted if predicted else float("nan"))


def report(name: str, results: list[Result], labels: list[dict]) -> None:
    rows = {}
    for result, label in zip(results, labels):
        out = analysis_output(result.analysis)
        rows[label["image"]] = {
            "status": "ok", "people_count": out.people_count, "faces_visible": out.faces_visible,
            "persons": [p.model_dump() for p in out.persons or []],
        }
    truth = {label["image"]: label for label in labels}
    metrics = evaluate(rows, truth)
    by_height, body_precision = body_scores(results, labels)
    people = [r.analysis.evidence for r, lab in zip(results, labels) if lab["people_count"] > 0]
    empty = [r.analysis.evidence for r, lab in zip(results, labels) if lab["people_count"] == 0]

    def gate_at(t: GateThresholds) -> str:
        recall = np.mean([t.decide(e)[0] for e in people])
        held = np.mean([not t.decide(e)[0] for e in empty])
        return f"face {t.face:g} body {t.body:g}: {recall:.3f}/{held:.2f}"

    gate = gate_at(GateThresholds()) + " (default); " + ", ".join(gate_at(t) for t in GATE_GRID if t != GateThresholds())
    ms = np.mean([r.cpu_ms for r in results])
    print(f"{name}: {ms:.0f} ms/img cpu ({1000 / ms:.1f} img/s/core)")
    print(f"  bodies  recall by height {by_height}, precision {body_precision:.3f}")
    print(f"  faces   >=24px recall {metrics.faces.recall} ({metrics.faces.matched}/{metrics.faces.labeled_faces}), precision {metrics.faces.precision}")
    print(f"  count   within +-1 {metrics.people_count.within_one}, exact {metrics.people_count.exact} ({metrics.people_count.images} scenes)")
    print(f"  gate    recall/empty held back at  {gate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images, labels = scenes(args.scenes, args.seed)
    people = sum(lab["people_count"] for lab in labels)
    print(f"{len(images)} scenes (seed {args.seed}), {people} pasted people, {sum(lab['people_count'] == 0 for lab in labels)} empty")
    for name in args.candidates.split(","):
        labeler = CpuLabeler(LabelerOptions(extra=CANDIDATES[name]))
        labeler.setup()
        labeler.analyse(images[0])  # warm-up
        results = []
        for image in images:
            started = time.process_time()
            analysis = labeler.analyse(image)
            results.append(Result(analysis, 1000 * (time.process_time() - started)))
        report(name, results, labels)


if __name__ == "__main__":
    main()
