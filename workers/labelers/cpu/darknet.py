"""A Darknet YOLO (cfg + weights, as AlexeyAB/darknet writes them) as a torch module, so it can run in bfloat16.

Why not only OpenCV's Darknet reader (yolo.py keeps it for float32): YOLOv4-tiny
at 832x640 is ~10.6 GMAC, and OpenCV's float32 convolutions already run near one
core's float32 peak (~190 ms). On CPUs with native bfloat16 (AVX512-BF16 or AMX,
which oneDNN reports), the same network in bfloat16, channels-last, takes ~0.55x
that time (docs/performance.md). The decoded rows are OpenCV's, so scores and
thresholds mean the same on either path: per anchor (centre x, y, width,
height as fractions of the input, objectness, then objectness x class
probability, zeroed at or below OpenCV's 0.2).

Only the layer kinds YOLOv4-tiny uses are built (convolutional with batch
norm folded in, leaky/linear activation, route with groups, maxpool, upsample,
yolo); anything else, or weights that do not fill the cfg exactly, fails as one
line (DetectorUnavailable).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from humantag.workers.labelers.cpu.weights import DetectorUnavailable

CLASS_SCORE_FLOOR = 0.2  # OpenCV's region layer zeroes objectness x class at or below this (its Darknet default)
BOX_FIELDS = 5  # tx, ty, tw, th, objectness, then the classes
LEAKY_SLOPE = 0.1  # Darknet's "leaky" activation


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively (else oneDNN emulates them, slower than float32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def read_cfg(path: Path) -> list[dict[str, str]]:
    """The cfg's sections in order, each {"type": name, key: value, ...}."""
    sections: list[dict[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]")})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    return sections


@dataclass(frozen=True)
class YoloHead:
    anchors: np.ndarray  # A x 2, input pixels
    scale_xy: float
    classes: int  # in the cfg; the module computes only `kept` of them


class _WeightReader:
    def __init__(self, path: Path) -> None:
        raw = path.read_bytes()
        major, minor = np.frombuffer(raw[:8], dtype=np.int32)
        header = 20 if major * 10 + minor >= 2 else 16  # version (3 x int32), then images seen: int64 or int32
        self.data = np.frombuffer(raw[header:], dtype=np.float32)
        self.offset = 0

    def take(self, count: int) -> np.ndarray:
        if self.offset + count > len(self.data):
            raise DetectorUnavailable("Darknet weights end before the cfg's layers do: the weights do not belong to this cfg")
        out = self.data[self.offset : self.offset + count]
        self.offset += count
        return out


def layout_step(step: tuple, x: torch.Tensor, outputs: list[torch.Tensor]) -> torch.Tensor:
    """A step that moves float activations without weights (route, maxpool, upsample; yolo passes
    its input through), given the current tensor and every earlier step's output."""
    kind = step[0]
    if kind == "route":
        _, sources, groups, group = step
        x = torch.cat([outputs[s] for s in sources], 1) if len(sources) > 1 else outputs[sources[0]]
        if groups > 1:
            width = x.shape[1] // groups
            x = x[:, group * width : (group + 1) * width]
        return x
    if kind == "maxpool":
        return F.max_pool2d(x, step[1], step[2])
    if kind == "upsample":
        return F.interpolate(x, scale_factor=step[1], mode="nearest")
    return x


class DarknetYolo(nn.Module):
    """The network from `cfg` + `weights`; its yolo layers compute only the classes in `kept`."""

    def __init__(self, cfg: Path, weights: Path, kept: Sequence[int]) -> None:
        super().__init__()
        sections = read_cfg(cfg)
        if not sections or sections[0]["type"] not in ("net", "network"):
            raise DetectorUnavailable(f"{cfg} is not a Darknet cfg (no [net] section)")
        reader = _WeightReader(weights)
        self.kept = list(kept)
        self.convs = nn.ModuleList()
        self.steps: list[tuple] = []
        self.heads: list[YoloHead] = []
        channels: list[int] = []  # output channels of each step
        current = int(sections[0].get("channels", 3))
        for index, section in enumerate(sections[1:]):
            kind = section["type"]
            if kind == "convolutional":
                current = self._add_conv(section, current, reader)
            elif kind == "route":
                sources = [int(v) for v in section["layers"].split(",")]
                sources = [s if s >= 0 else index + s for s in sources]
                groups, group = int(section.get("groups", 1)), int(section.get("group_id", 0))
                self.steps.append(("route", sources, groups, group))
                current = sum(channels[s] for s in sources) // groups
            elif kind == "maxpool":
                self.steps.append(("maxpool", int(section["size"]), int(section["stride"])))
            elif kind == "upsample":
                self.steps.append(("upsample", int(section["stride"])))
            elif kind == "yolo":
                mask = [int(v) for v in section["mask"].split(",")]
                anchors = np.array([float(v) for v in section["anchors"].split(",")], dtype=np.float32).reshape(-1, 2)[mask]
                self.heads.append(YoloHead(anchors, float(section.get("scale_x_y", 1.0)), int(section["classes"])))
                self.steps.append(("yolo", len(self.heads) - 1))
            else:
                raise DetectorUnavailable(f"{cfg}: layer [{kind}] is not supported by humantag's Darknet reader")
            channels.append(current)
        if reader.offset != len(reader.data):
            raise DetectorUnavailable(f"{weights} holds more numbers than {cfg} uses: the weights do not belong to this cfg")
        self._trim_heads()
        self.eval()

    def _add_conv(self, section: dict[str, str], cin: int, reader: _WeightReader) -> int:
        filters, size, stride = int(section["filters"]), int(section["size"]), int(section.get("stride", 1))
        conv = nn.Conv2d(cin, filters, size, stride, size // 2 if int(section.get("pad", 0)) else 0, bias=True)
        if int(section.get("batch_normalize", 0)):
            bias, scale, mean, var = (reader.take(filters) for _ in range(4))
            weight = reader.take(filters * cin * size * size).reshape(filters, cin, size, size)
            gain = scale / np.sqrt(var + 1e-5)  # batch norm folded into the convolution
            weight, bias = weight * gain[:, None, None, None], bias - mean * gain
        else:
            bias = reader.take(filters)
            weight = reader.take(filters * cin * size * size).reshape(filters, cin, size, size)
        conv.weight.data = torch.from_numpy(np.array(weight, dtype=np.float32))
        conv.bias.data = torch.from_numpy(np.array(bias, dtype=np.float32))
        self.convs.append(conv)
        self.steps.append(("conv", len(self.convs) - 1, section.get("activation", "linear")))
        return filters

    def _trim_heads(self) -> None:
        """The convolution before each yolo layer keeps the box fields and the kept classes' rows only."""
        for position, step in enumerate(self.steps):
            if step[0] != "yolo":
                continue
            head = self.heads[step[1]]
            conv_step = self.steps[position - 1]
            conv = self.convs[conv_step[1]]
            per_anchor = BOX_FIELDS + head.classes
            rows = [a * per_anchor + f for a in range(len(head.anchors)) for f in [*range(BOX_FIELDS), *(BOX_FIELDS + c for c in self.kept)]]
            trimmed = nn.Conv2d(conv.in_channels, len(rows), conv.kernel_size, conv.stride, conv.padding, bias=True)
            trimmed.weight.data = conv.weight.data[rows].clone()
            trimmed.bias.data = conv.bias.data[rows].clone()
            self.convs[conv_step[1]] = trimmed

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw yolo-layer inputs, one N x (A * (5 + kept)) x H x W tensor per head."""
        outputs: list[torch.Tensor] = []
        heads: list[torch.Tensor] = []
        for step in self.steps:
            kind = step[0]
            if kind == "conv":
                x = self.convs[step[1]](x)
                if step[2] == "leaky":
                    x = F.leaky_relu(x, LEAKY_SLOPE, inplace=True)
                elif step[2] != "linear":
                    raise DetectorUnavailable(f"activation {step[2]} is not supported by humantag's Darknet reader")
            else:
                x = layout_step(step, x, outputs)
                if kind == "yolo":  # decoded by decode(), outside the network
                    heads.append(x)
            outputs.append(x)
        return heads

    def decode(self, raw: list[torch.Tensor], input_width: int, input_height: int) -> np.ndarray:
        """Rows as OpenCV's Darknet reader gives them, for image 0: (x, y, w, h, objectness, scores of kept classes)."""
        rows = []
        for head, tensor in zip(self.heads, raw):
            anchors = len(head.anchors)
            _, fields, height, width = tensor.shape
            t = tensor[0].float().reshape(anchors, fields // anchors, height, width).permute(2, 3, 0, 1).numpy()
            sig = 1.0 / (1.0 + np.exp(-np.concatenate([t[..., 0:2], t[..., 4:]], axis=-1)))
            out = np.empty_like(t)
            shift = (head.scale_xy - 1.0) / 2.0
            out[..., 0] = (np.arange(width)[None, :, None] + sig[..., 0] * head.scale_xy - shift) / width
            out[..., 1] = (np.arange(height)[:, None, None] + sig[..., 1] * head.scale_xy - shift) / height
            out[..., 2] = np.exp(t[..., 2]) * head.anchors[:, 0] / input_width
            out[..., 3] = np.exp(t[..., 3]) * head.anchors[:, 1] / input_height
            objectness = sig[..., 2]
            out[..., 4] = objectness
            scores = sig[..., 3:] * objectness[..., None]
            out[..., BOX_FIELDS:] = np.where(scores > CLASS_SCORE_FLOOR, scores, 0.0)
            rows.append(out.reshape(-1, fields // anchors))
        return np.concatenate(rows)
