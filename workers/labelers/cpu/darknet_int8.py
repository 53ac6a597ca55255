"""YOLOv4-tiny (darknet.DarknetYolo) with 8-bit integer convolutions, for CPUs with VNNI.

Why: on a CPU with AVX512-VNNI (or AVX-VNNI / AMX), torch's x86 int8
convolutions take ~0.5-0.6x the time of the same convolutions in bfloat16, and
YOLOv4-tiny is almost all convolutions: one 832x640 pass ~70 against ~115 ms
here (docs/performance.md).

How (post-training quantization, no retraining):
- weights: symmetric, one scale per output channel (max |w| / 127);
- activations: one scale and zero point per tensor, covering the smallest and
  largest value seen in float32 passes over the six development-set photos
  (scikit-image, matplotlib) at 832 and 1248 px. Clipping ranges (at the
  0.01 % quantile, or torch's HistogramObserver) moved scores more
  (docs/cpu-labeler.md). The ranges are committed in
  RANGES_FILE with the weights' sha256, so a replica starts without
  calibrating; `python -m humantag.workers.labelers.cpu.darknet_int8`
  rewrites it. The input is the image's bytes themselves (uint8 at scale
  1/255), so nothing is lost there;
- every layer between the input and the heads runs on quantized tensors
  (convolution, leaky ReLU, route concat and channel groups, max-pool,
  nearest upsampling); the two head convolutions (1x1, a few % of the work)
  run in float32 on dequantized inputs, so box offsets and the logits that
  become scores keep full precision.
The output is the float network's (`DarknetYolo.decode` reads it unchanged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

from humantag.workers.labelers.cpu.darknet import LEAKY_SLOPE, DarknetYolo, layout_step
from humantag.workers.labelers.cpu.weights import DetectorUnavailable

log = logging.getLogger(__name__)

RANGES_FILE = Path(__file__).with_name("yolov4-tiny-int8-ranges.json")
CALIBRATION_SIDES = (832, 1248)  # the labeler's two passes (body_side, the closer look)


def native_int8() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (VNNI or AMX): without them int8 is no faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "x86" in torch.backends.quantized.supported_engines and any(
        flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8")
    )


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def qparams(self) -> tuple[float, int]:
        """(scale, zero point) of quint8 covering [low, high] (0 always included, so ReLU zeros are exact)."""
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        scale = max((high - low) / 255.0, 1e-8)
        return scale, int(round(min(255.0, max(0.0, -low / scale))))


def calibrate(net: DarknetYolo, images: Sequence[torch.Tensor], observer: str = "minmax") -> dict[str, Range]:
    """Ranges of every step's output ("out{i}") and every convolution's output before its activation
    ("pre{i}"), over float32 passes on `images` (N x 3 x H x W in [0, 1])."""
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    kind_of = {"histogram": HistogramObserver, "minmax": MinMaxObserver}[observer]
    seen: dict[str, nn.Module] = {}

    def observe(key: str, tensor: torch.Tensor) -> None:
        if key not in seen:
            seen[key] = kind_of(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=False)
        seen[key](tensor.detach().float())

    with torch.inference_mode():
        for image in images:
            outputs: list[torch.Tensor] = []
            x = image
            for index, step in enumerate(net.steps):
                if step[0] == "route" and len(step[1]) > 1 and step[2] > 1:
                    raise DetectorUnavailable("the int8 reader cannot split a concatenation into groups")
                if step[0] == "conv":
                    x = net.convs[step[1]](x)
                    observe(f"pre{index}", x)
                    if step[2] == "leaky":
                        x = F.leaky_relu(x, LEAKY_SLOPE)
                else:
                    x = layout_step(step, x, outputs)
                observe(f"out{index}", x)
                outputs.append(x)
    ranges = {}
    for key, chosen in seen.items():
        scale, zero_point = (float(v) for v in chosen.calculate_qparams())
        ranges[key] = Range(-zero_point * scale, (255 - zero_point) * scale)
    return ranges


def _quantized_conv(conv: nn.Conv2d, output: Range) -> QuantizedConv2d:
    weight = conv.weight.detach().float()
    scales = (weight.abs().amax(dim=(1, 2, 3)) / 127.0).clamp(min=1e-8).double()
    with warnings.catch_warnings():
        # torch marks its quantized tensors deprecated (pytorch#184982) but they are what its int8
        # CPU kernels take; torch is pinned (pyproject.toml), and `auto` uses int8 only where they load.
        warnings.simplefilter("ignore", UserWarning)
        qweight = torch.quantize_per_channel(weight, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
    quantized = QuantizedConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True
    )
    quantized.set_weight_bias(qweight, conv.bias.detach().float())
    quantized.scale, quantized.zero_point = output.qparams()
    return quantized


class Int8Yolo(nn.Module):
    """`net` with int8 convolutions, given `ranges` from calibrate(); forward takes the image's uint8
    pixels (N x 3 x H x W) and returns what DarknetYolo.forward returns."""

    def __init__(self, net: DarknetYolo, ranges: dict[str, Range]) -> None:
        super().__init__()
        torch.backends.quantized.engine = "x86"  # process-wide; the x86 engine is what native_int8() checks for
        self.steps = net.steps
        self.heads = net.heads
        self.kept = net.kept
        self.decode = net.decode
        head_inputs = {position - 1 for position, step in enumerate(net.steps) if step[0] == "yolo"}
        self.float_convs = nn.ModuleDict()  # the heads' 1x1 convolutions stay float32
        self.int8_convs = nn.ModuleDict()
        self.qparams: dict[int, tuple[float, int]] = {}  # step -> its output's (scale, zero point)
        try:
            for index, step in enumerate(net.steps):
                if step[0] == "route" and len(step[1]) > 1 and step[2] > 1:
                    raise DetectorUnavailable("the int8 reader cannot split a concatenation into groups")
                if step[0] == "conv":
                    conv = net.convs[step[1]]
                    if index in head_inputs:
                        self.float_convs[str(index)] = conv
                    else:
                        self.int8_convs[str(index)] = _quantized_conv(conv, ranges[f"pre{index}"])
                self.qparams[index] = ranges[f"out{index}"].qparams()
        except (KeyError, RuntimeError) as exc:
            raise DetectorUnavailable(f"cannot build the int8 person detector: {type(exc).__name__}: {exc}") from None
        self.eval()

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = torch._make_per_tensor_quantized_tensor(pixels.contiguous(memory_format=torch.channels_last), 1.0 / 255.0, 0)
        outputs: list[torch.Tensor] = []
        heads: list[torch.Tensor] = []
        for index, step in enumerate(self.steps):
            kind = step[0]
            if kind == "conv":
                if str(index) in self.float_convs:  # a head: its output is decoded in float
                    x = self.float_convs[str(index)](x.dequantize())
                else:
                    x = self.int8_convs[str(index)](x)
                    if step[2] == "leaky":
                        scale, zero_point = self.qparams[index]
                        x = torch.ops.quantized.leaky_relu(x, LEAKY_SLOPE, False, scale, zero_point)
            elif kind == "route" and len(step[1]) > 1:  # a concat: quantized tensors need its output's scale
                scale, zero_point = self.qparams[index]
                x = torch.ops.quantized.cat([outputs[s] for s in step[1]], 1, scale, zero_point)
            else:  # max-pool, upsampling and channel groups work on quantized tensors as they are
                x = layout_step(step, x, outputs)
                if kind == "route":
                    x = x.contiguous(memory_format=torch.channels_last)
                elif kind == "yolo":
                    heads.append(x)
            outputs.append(x)
        return heads


def weights_digest(weights: Path) -> str:
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def save_ranges(ranges: dict[str, Range], weights: Path, path: Path = RANGES_FILE) -> None:
    """One range per line: "out{i}" is step i's output, "pre{i}" convolution i's output before its activation."""
    keys = sorted(ranges, key=lambda key: (int(key[3:]), key))
    lines = [f'  "{key}": [{ranges[key].low!r}, {ranges[key].high!r}]' for key in keys]
    calibration = f"float32 min/max over the development-set photos at {', '.join(map(str, CALIBRATION_SIDES))} px"
    path.write_text(
        f'{{\n "weights_sha256": "{weights_digest(weights)}",\n "calibration": {json.dumps(calibration)},\n'
        f' "ranges": {{\n' + ",\n".join(lines) + "\n }\n}\n"
    )


def load_ranges(weights: Path, path: Path = RANGES_FILE) -> dict[str, Range]:
    """The committed ranges, if they were calibrated for exactly these weights (else one line: DetectorUnavailable)."""
    try:
        body = json.loads(path.read_text())
        ranges = {key: Range(float(low), float(high)) for key, (low, high) in body["ranges"].items()}
        digest = body["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectorUnavailable(f"cannot read the int8 ranges {path}: {type(exc).__name__}: {exc}") from None
    if digest != weights_digest(weights):
        raise DetectorUnavailable(
            f"{path.name} was calibrated for other weights than {weights}: "
            "run `python -m humantag.workers.labelers.cpu.darknet_int8`, or use -L precision=bf16"
        )
    return ranges


def calibration_inputs() -> list[torch.Tensor]:
    """The six development-set photos as the network sees them at each CALIBRATION_SIDES, float in [0, 1]."""
    import tempfile

    import cv2
    from PIL import Image

    from humantag.workers.devset import write_devset
    from humantag.workers.labelers.cpu.yolo import input_size

    with tempfile.TemporaryDirectory() as folder:
        photos = [np.asarray(Image.open(p).convert("RGB")) for p in write_devset(folder)]
    inputs = []
    for rgb in photos:
        for side in CALIBRATION_SIDES:
            resized = cv2.resize(rgb, input_size(*rgb.shape[:2], side), interpolation=cv2.INTER_LINEAR)
            inputs.append(torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255.0)
    return inputs


def main() -> None:
    """Calibrate YOLOv4-tiny's activation ranges and write RANGES_FILE (needs the `test` extra's photos)."""
    from humantag.workers.labelers.cpu.weights import YOLO_WEIGHTS
    from humantag.workers.labelers.cpu.yolo import load_darknet_yolo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    ranges = calibrate(load_darknet_yolo(), calibration_inputs())
    save_ranges(ranges, YOLO_WEIGHTS.locate())
    log.info("wrote %d ranges to %s", len(ranges), RANGES_FILE)


if __name__ == "__main__":
    main()
