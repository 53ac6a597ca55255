"""Person bodies: SSDLite + MobileNetV2 (one class, person), run by OpenCV DNN.

The frozen TensorFlow graph (weights.SSDLITE_PERSON) holds pre- and
post-processing ops OpenCV cannot run (a TensorArray loop, the NMS op). We keep
only the convolutional part: the graph is written as text, cut down to the
nodes the twelve box-predictor convolutions need, and loaded with the binary
weights. Anchors, box decoding and NMS are done here, following the
TensorFlow Object Detection API's SSD settings (6 layers, scales 0.2-0.95,
aspect ratios 1, 2, 1/2, 3, 1/3, three boxes in the lowest layer, box coder
scales 10, 10, 5, 5, sigmoid scores).

Anchors are sized in pixels as at the 300x300 training input, so the network
runs fully convolutionally at any input size: a larger input finds smaller
people (a person needs ~30 px of input height; see analyse.py for the scales).
"""

from __future__ import annotations

import math
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from humantag.workers.labelers.cpu.detectors import Detection, nms_boxes
from humantag.workers.labelers.cpu.weights import SSDLITE_PERSON, DetectorUnavailable, load_opencv_net

TRAIN_SIDE = 300
NUM_LAYERS = 6
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
BOX_CODER_SCALES = np.array([10.0, 10.0, 5.0, 5.0], dtype=np.float32)
INPUT_NODE = "FeatureExtractor/MobilenetV2/MobilenetV2/input"
OUTPUTS = [f"BoxPredictor_{i}/{kind}/Conv2D" for i in range(NUM_LAYERS) for kind in ("BoxEncodingPredictor", "ClassPredictor")]
# Raw scores below this are dropped before NMS (the caller applies its own threshold after).
CANDIDATE_SCORE = 0.05
CORNER_PX = 2.0
NMS_IOU = 0.45


def _layer_boxes(layer: int) -> list[tuple[float, float]]:
    """(scale, aspect ratio) of the anchors at each cell of `layer`, in the API's order."""
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (NUM_LAYERS - 1) for i in range(NUM_LAYERS)] + [1.0]
    if layer == 0:
        return [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
    boxes = [(scales[layer], ar) for ar in ASPECT_RATIOS]
    boxes.append((math.sqrt(scales[layer] * scales[layer + 1]), 1.0))
    return boxes


@lru_cache(maxsize=32)
def anchors(layer: int, rows: int, cols: int, height: int, width: int) -> np.ndarray:
    """(rows*cols*A, 4) anchors as (cy, cx, h, w) in input pixels, cell-major like the predictor's output."""
    boxes = _layer_boxes(layer)
    ys = (np.arange(rows, dtype=np.float32) + 0.5) * (height / rows)
    xs = (np.arange(cols, dtype=np.float32) + 0.5) * (width / cols)
    hw = np.array([(s / math.sqrt(ar) * TRAIN_SIDE, s * math.sqrt(ar) * TRAIN_SIDE) for s, ar in boxes], dtype=np.float32)
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    centres = np.stack([cy.ravel(), cx.ravel()], axis=1)  # (rows*cols, 2)
    out = np.empty((rows * cols, len(boxes), 4), dtype=np.float32)
    out[:, :, 0:2] = centres[:, None, :]
    out[:, :, 2:4] = hw[None, :, :]
    return out.reshape(-1, 4)


def _convolutional_graph(pb: Path, out: Path) -> None:
    """Write the text graph of the nodes the box predictors depend on, input replaced by a placeholder."""
    full = out.with_suffix(".full.pbtxt")
    cv2.dnn.writeTextGraph(str(pb), str(full))
    nodes: dict[str, str] = {}
    for block in re.split(r"(?m)^(?=node \{)", full.read_text()):
        name = re.search(r'^  name: "([^"]+)"', block, re.M)
        if name:
            nodes[name.group(1)] = block
    full.unlink()
    keep: set[str] = set()
    stack = list(OUTPUTS)
    while stack:
        name = stack.pop()
        if name in keep or name == INPUT_NODE:
            continue
        if name not in nodes:
            raise DetectorUnavailable(f"{pb} is not the expected SSDLite graph (no node {name})")
        keep.add(name)
        stack.extend(i.split(":")[0].lstrip("^") for i in re.findall(r'^  input: "([^"]+)"', nodes[name], re.M))
    placeholder = (
        f'node {{\n  name: "{INPUT_NODE}"\n  op: "Placeholder"\n'
        '  attr {\n    key: "dtype"\n    value {\n      type: DT_FLOAT\n    }\n  }\n}\n'
    )
    # Constants come from the binary graph; listing them again in the text makes OpenCV add them twice.
    body = "".join(nodes[n] for n in nodes if n in keep and 'op: "Const"' not in nodes[n])
    out.write_text(placeholder + body)


def load_person_net() -> cv2.dnn.Net:
    pb = SSDLITE_PERSON.locate()
    with tempfile.TemporaryDirectory(prefix="humantag-ssd-") as tmp:
        graph = Path(tmp) / "ssdlite.pbtxt"

        def read() -> cv2.dnn.Net:
            _convolutional_graph(pb, graph)
            return cv2.dnn.readNetFromTensorflow(str(pb), str(graph))

        return load_opencv_net(pb, read)


class PersonNet:
    """One OpenCV network; not safe to share between threads (keep one per thread)."""

    def __init__(self) -> None:
        self.net = load_person_net()

    def detect(self, rgb: np.ndarray, min_score: float, layers: int = NUM_LAYERS, skip_corner: bool = False) -> list[Detection]:
        """Bodies in `rgb` (HxWx3 uint8, any size >= 32 px) in its pixel coordinates, after NMS.

        `layers`: use only the first this many predictor layers (the small anchors).
        `skip_corner`: drop boxes that start in the top-left corner. At inputs larger
        than 300 px the lowest layers fire there on any image, even a flat grey one
        (score ~0.2-0.4, box at 0,0), presumably where OpenCV's padding differs from
        TensorFlow's (which pads bottom/right)."""
        height, width = rgb.shape[:2]
        blob = cv2.dnn.blobFromImage(rgb, 1.0 / 127.5, (width, height), (127.5, 127.5, 127.5), swapRB=False)
        self.net.setInput(blob)
        return self._decode([r[0] for r in self.net.forward(OUTPUTS)], height, width, min_score, layers, skip_corner)

    def detect_tiles(self, rgb: np.ndarray, min_score: float, tile: int = TRAIN_SIDE, overlap: int = 60) -> list[Detection]:
        """Bodies in overlapping tile x tile crops of `rgb` (the training geometry), one batched forward pass."""
        height, width = rgb.shape[:2]
        if height <= tile and width <= tile:
            return self.detect(rgb, min_score)

        def starts(size: int) -> list[int]:
            if size <= tile:
                return [0]
            step = tile - overlap
            return sorted({*range(0, size - tile, step), size - tile})

        padded = rgb
        if height < tile or width < tile:
            padded = cv2.copyMakeBorder(rgb, 0, max(0, tile - height), 0, max(0, tile - width), cv2.BORDER_REPLICATE)
        origins = [(x, y) for y in starts(height) for x in starts(width)]
        crops = [np.ascontiguousarray(padded[y : y + tile, x : x + tile]) for x, y in origins]
        blob = cv2.dnn.blobFromImages(crops, 1.0 / 127.5, (tile, tile), (127.5, 127.5, 127.5), swapRB=False)
        self.net.setInput(blob)
        results = self.net.forward(OUTPUTS)
        found = []
        for k, (x, y) in enumerate(origins):
            for d in self._decode([r[k] for r in results], tile, tile, min_score, NUM_LAYERS, False):
                x1, y1 = d.x + x, d.y + y
                x2, y2 = min(float(width), x1 + d.w), min(float(height), y1 + d.h)
                if x2 - x1 >= 2 and y2 - y1 >= 2:
                    found.append(Detection(x1, y1, x2 - x1, y2 - y1, d.score, d.kind))
        return found

    def _decode(
        self, results: list[np.ndarray], height: int, width: int, min_score: float, layers: int, skip_corner: bool
    ) -> list[Detection]:
        boxes, scores_kept = [], []
        for layer in range(layers):
            enc, logits = results[2 * layer], results[2 * layer + 1]
            count = len(_layer_boxes(layer))
            # NCHW with channel = anchor * k + value  ->  (cell, anchor, value), cell-major.
            rows, cols = enc.shape[1], enc.shape[2]
            codes = enc.reshape(count, 4, rows * cols).transpose(2, 0, 1).reshape(-1, 4)
            person = logits.reshape(count, 2, rows * cols)[:, 1, :].T.reshape(-1)
            scores = 1.0 / (1.0 + np.exp(-person))
            picked = np.nonzero(scores >= max(min_score, CANDIDATE_SCORE))[0]
            if not len(picked):
                continue
            anc = anchors(layer, rows, cols, height, width)[picked]
            t = codes[picked] / BOX_CODER_SCALES
            cy = t[:, 0] * anc[:, 2] + anc[:, 0]
            cx = t[:, 1] * anc[:, 3] + anc[:, 1]
            h = np.exp(t[:, 2]) * anc[:, 2]
            w = np.exp(t[:, 3]) * anc[:, 3]
            boxes.append(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
            scores_kept.append(scores[picked])
        if not boxes:
            return []
        xyxy = np.concatenate(boxes)
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
        score = np.concatenate(scores_kept)
        keep = (xyxy[:, 2] - xyxy[:, 0] >= 2) & (xyxy[:, 3] - xyxy[:, 1] >= 2)
        if skip_corner:
            keep &= ~((xyxy[:, 0] <= CORNER_PX) & (xyxy[:, 1] <= CORNER_PX))
        xyxy, score = xyxy[keep], score[keep]
        kept = nms_boxes(xyxy, score, NMS_IOU)
        xyxy, score = xyxy[kept], score[kept]
        return [Detection(float(x1), float(y1), float(x2 - x1), float(y2 - y1), float(s), "body") for (x1, y1, x2, y2), s in zip(xyxy, score)]

