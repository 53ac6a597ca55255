"""Faces: MTCNN (Zhang et al. 2016), three small cascaded CNNs on the CPU with PyTorch.

Weights: facenet-pytorch's state dicts (weights.MTCNN_FILES), read with
torch.load; the package itself is never imported (it needs torchvision). The
networks are re-declared here with the parameter names of those files. NMS is
numpy (no torchvision ops).

Stages: PNet scans an image pyramid (12x12 windows, stride 2) starting at the
scale where a `min_face` px face fills a window; RNet (24x24) and ONet (48x48)
re-score and refine the candidates. ONet's probability is the face's score.

Float32 only: in bfloat16 these small networks are no faster here (torch's
bfloat16 PReLU costs what the convolutions save) and false-face scores move by
up to 0.4 (docs/performance.md).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from humantag.workers.labelers.cpu.detectors import Detection, nms_boxes
from humantag.workers.labelers.cpu.weights import MTCNN_FILES, DetectorUnavailable

PYRAMID_STEP = 0.709  # the paper's factor: each level is half the area of the previous one
# Levels at most this fraction of the image's side come from its integral image (`area_levels`).
INTEGRAL_BELOW = 0.3
INPUT_SCALE = 0.0078125  # the networks see (v - 127.5) / 128
STAGE_THRESHOLDS = (0.6, 0.7)  # PNet, RNet: candidates below these are dropped (ONet: the caller's threshold)


def _conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=k), nn.PReLU(cout)]


def _max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """MaxPool2d(2, 2, ceil_mode=True), ~10x faster on large CPU tensors than torch's kernel."""
    height, width = x.shape[2], x.shape[3]
    if height % 2 or width % 2:
        x = nn.functional.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    x = torch.maximum(x[:, :, 0::2, :], x[:, :, 1::2, :])
    return torch.maximum(x[:, :, :, 0::2], x[:, :, :, 1::2])


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(self.conv1(x))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map the heads read, from conv1's output."""
        x = _max_pool_2x2(self.prelu1(x))
        return self.prelu3(self.conv3(self.prelu2(self.conv2(x))))


class PNetScanner:
    """PNet over one pyramid level, computing only what the cascade reads (the same numbers as
    PNet.forward up to float rounding): conv1 takes the pixels as they are (the input scaling is
    folded into its weights), the face head is one channel, the face-minus-background logit
    (softmax over two classes is the sigmoid of their difference), and the box head is evaluated
    only where the face probability passes. On a 1024x768 image ~0.6x PNet.forward's time: at
    the pyramid's largest levels the unread channels cost as much as the convolutions."""

    def __init__(self, pnet: PNet) -> None:
        self.pnet = pnet
        w, b = pnet.conv1.weight.detach(), pnet.conv1.bias.detach()
        # conv1((v - 127.5) / 128) == conv1 with weights w / 128 and bias b - 127.5 / 128 * sum(w)
        self.conv1_weight = w * INPUT_SCALE
        self.conv1_bias = b - 127.5 * INPUT_SCALE * w.sum(dim=(1, 2, 3))
        face = pnet.conv4_1.weight.detach()
        self.face_weight = face[1:2] - face[0:1]
        self.face_bias = pnet.conv4_1.bias.detach()[1:2] - pnet.conv4_1.bias.detach()[0:1]
        self.box_weight = pnet.conv4_2.weight.detach().reshape(4, -1)
        self.box_bias = pnet.conv4_2.bias.detach()
        self.min_logit = float(np.log(STAGE_THRESHOLDS[0] / (1.0 - STAGE_THRESHOLDS[0])))

    def scan(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Window positions (ys, xs) on PNet's output grid whose face probability reaches
        STAGE_THRESHOLDS[0], that probability and their box regression (n x 4)."""
        # NHWC memory (channels_last), every stride set: oneDNN's fast path (a 0 or odd batch stride is ~2x slower)
        x = torch.from_numpy(np.ascontiguousarray(level)).view(1, *level.shape).permute(0, 3, 1, 2).float()
        features = self.pnet.features(nn.functional.conv2d(x, self.conv1_weight, self.conv1_bias))
        logit = nn.functional.conv2d(features, self.face_weight, self.face_bias)[0, 0]
        ys, xs = torch.nonzero(logit >= self.min_logit, as_tuple=True)
        prob = torch.sigmoid(logit[ys, xs])
        reg = (self.box_weight @ features[0][:, ys, xs]).T + self.box_bias
        return ys.numpy(), xs.numpy(), prob.numpy(), reg.numpy()


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from a (W, H)-ordered framework: flatten in that order.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # landmarks: loaded, unused

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), torch.softmax(self.dense6_1(x), dim=1)


def _load(net: nn.Module, stage: str) -> nn.Module:
    path = MTCNN_FILES[stage].locate()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any failure here is one line: which file, why
        raise DetectorUnavailable(f"cannot load MTCNN weights {path}: {type(exc).__name__}: {exc}") from None
    return net.eval()


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _refine(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] = boxes[:, 0:4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 (or NxHxWx3) -> the networks' input: NCHW float, (v - 127.5) / 128."""
    batch = rgb if rgb.ndim == 4 else rgb[None]
    return (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - 127.5) * INPUT_SCALE


def _area_edges(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the target's pixel edges fall in the source: whole pixel index and fraction."""
    position = np.arange(target + 1) * (source / target)
    index = np.minimum(position.astype(np.int64), source - 1)
    return index, position - index


def _area_from_integral(integral: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(image, size, INTER_AREA) from the image's float64 integral: each output pixel is the
    mean over its footprint, and the integral at a fractional edge is linear between its neighbours.
    Equal to OpenCV's pixels except, rarely, by 1 where OpenCV's float32 sum rounds a .5 the other way."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    iy, fy = _area_edges(height, size[1])
    ix, fx = _area_edges(width, size[0])
    rows = integral[iy] + (integral[iy + 1] - integral[iy]) * fy[:, None, None]
    corners = rows[:, ix] + (rows[:, ix + 1] - rows[:, ix]) * fx[None, :, None]
    sums = corners[1:, 1:] - corners[:-1, 1:] - corners[1:, :-1] + corners[:-1, :-1]
    return np.rint(sums * (size[0] * size[1] / (width * height))).clip(0, 255).astype(np.uint8)


def area_levels(rgb: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The pyramid: `rgb` area-resized to each (width, height). OpenCV's INTER_AREA reads the whole
    image for every level, so the small levels (below INTEGRAL_BELOW of the side) cost as much as
    the large ones; they are taken from one integral image instead (~0.4x their time)."""
    height, width = rgb.shape[:2]
    integral = None
    levels = []
    for size in sizes:
        if size[0] > INTEGRAL_BELOW * width:
            levels.append(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
            continue
        if integral is None:
            integral = cv2.integral(rgb, sdepth=cv2.CV_64F)
        levels.append(_area_from_integral(integral, size))
    return levels


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Crops of `boxes` (zero-padded outside the image), each resized to size x size."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(int)):
        if x1 >= 0 and y1 >= 0 and x2 < width and y2 < height and x2 >= x1 and y2 >= y1:
            out[k] = cv2.resize(rgb[y1 : y2 + 1, x1 : x2 + 1], (size, size), interpolation=cv2.INTER_AREA)
            continue
        crop = np.zeros((max(1, y2 - y1 + 1), max(1, x2 - x1 + 1), 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(width, x2 + 1), min(height, y2 + 1)
        if sx2 > sx1 and sy2 > sy1:
            crop[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return _tensor(out)


class FaceNet:
    """MTCNN on one image at a time; torch modules are safe to share between threads for inference."""

    def __init__(self, min_face: float = 16.0) -> None:
        self.min_face = min_face
        self.pnet_scanner = PNetScanner(_load(PNet(), "pnet"))
        self.rnet = _load(RNet(), "rnet")
        self.onet = _load(ONet(), "onet")

    @staticmethod
    def _run(net: nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(box regression, face probability) of `net` on a batch, as numpy arrays."""
        reg, prob = net(batch)
        return reg.numpy(), prob[:, 1].numpy()

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, min_score: float) -> list[Detection]:
        height, width = rgb.shape[:2]
        candidates = []
        scales = []
        scale = 12.0 / self.min_face
        while min(height, width) * scale >= 12:
            scales.append(scale)
            scale *= PYRAMID_STEP
        sizes = [(int(width * s + 1), int(height * s + 1)) for s in scales]
        for scale, level in zip(scales, area_levels(rgb, sizes)):
            ys, xs, prob, reg = self.pnet_scanner.scan(level)
            if len(ys):
                boxes = np.stack(
                    [np.floor((2 * xs + 1) / scale), np.floor((2 * ys + 1) / scale),
                     np.floor((2 * xs + 12) / scale), np.floor((2 * ys + 12) / scale), prob], axis=1,
                )
                keep = nms_boxes(boxes[:, :4], boxes[:, 4], 0.5)
                candidates.append(np.concatenate([boxes[keep], reg[keep]], axis=1))
        if not candidates:
            return []
        boxes = np.concatenate(candidates)
        boxes = boxes[nms_boxes(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = _square(np.concatenate([_refine(boxes[:, :4], boxes[:, 5:9]), boxes[:, 4:5]], axis=1))
        reg, score = self._run(self.rnet, _crops(rgb, boxes, 24))
        passed = score >= STAGE_THRESHOLDS[1]
        boxes = np.concatenate([boxes[passed, :4], score[passed, None]], axis=1)
        reg = reg[passed]
        if not len(boxes):
            return []
        keep = nms_boxes(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(np.concatenate([_refine(boxes[keep, :4], reg[keep]), boxes[keep, 4:5]], axis=1))
        reg, score = self._run(self.onet, _crops(rgb, boxes, 48))
        passed = score >= min_score
        boxes = np.concatenate([_refine(boxes[passed, :4], reg[passed]), score[passed, None]], axis=1)
        if not len(boxes):
            return []
        boxes = boxes[nms_boxes(boxes[:, :4], boxes[:, 4], 0.7, by_min=True)]
        found = []
        for x1, y1, x2, y2, s in boxes:
            x1, y1 = max(0.0, float(x1)), max(0.0, float(y1))
            x2, y2 = min(float(width), float(x2)), min(float(height), float(y2))
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                found.append(Detection(x1, y1, x2 - x1, y2 - y1, float(s), "frontal"))
        return found


def check_available() -> None:
    for weight in MTCNN_FILES.values():
        weight.locate()


__all__ = ["FaceNet", "DetectorUnavailable", "check_available"]
