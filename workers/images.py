"""Turn the bytes of one object into RGB pixels, or into a specific error.

Everything an archive throws at us ends here as either a `DecodedImage` with
pixels or one with `error_kind` set: zero bytes, truncated files, non-images
under image names, decompression bombs (refused from the header, before any
pixel is allocated), 16-bit and palette PNGs, CMYK JPEGs, EXIF rotation,
animated GIFs (first frame).
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from humantag.workers.records import ErrorKind

# Pillow's own default limit; ours is explicit and checked before decoding.
DEFAULT_MAX_PIXELS = 89_478_485

# Longest / shortest side beyond which an image is refused as unsupported_geometry: labelers
# resize to a fixed input size, and a 1x100000 strip has no size that keeps both sides >= 1 px.
DEFAULT_MAX_ASPECT_RATIO = 100.0

# We check sizes ourselves from the header; keep Pillow from raising its own
# bomb error (or warning) first, with a less useful message.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class DecodedImage:
    uri: str
    etag: Optional[str] = None
    mtime: Optional[float] = None
    size_bytes: Optional[int] = None
    width: Optional[int] = None  # after EXIF rotation, before any downscale
    height: Optional[int] = None
    format: Optional[str] = None
    mode: Optional[str] = None  # the source mode (RGB, CMYK, P, I;16, ...)
    pixels: Optional[np.ndarray] = None  # HxWx3 uint8 RGB, maybe downscaled
    read_ms: Optional[float] = None
    decode_ms: Optional[float] = None
    error_kind: Optional[str] = None
    error_message: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None and self.pixels is not None

    @property
    def scale(self) -> float:
        """pixels-per-source-pixel: multiply a box on `pixels` by 1/scale for source coordinates."""
        if self.pixels is None or not self.width:
            return 1.0
        return self.pixels.shape[1] / self.width

    def pil(self) -> Image.Image:
        assert self.pixels is not None
        return Image.fromarray(self.pixels)


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        return Image.fromarray(((arr - arr.min()) * (255.0 / span)).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")
    return img


def decode_image(
    data: bytes,
    item: DecodedImage,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: Optional[int] = None,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> DecodedImage:
    """Fill `item` with pixels or an error; never raises for bad image data."""
    started = time.perf_counter()
    try:
        _decode_into(data, item, max_pixels, max_side, max_aspect_ratio)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a row, not a crash
        item.pixels = None
        item.error_kind = item.error_kind or "decode_error"
        item.error_message = item.error_message or f"{type(exc).__name__}: {exc}"
    item.decode_ms = (time.perf_counter() - started) * 1000.0
    return item


def _decode_into(data: bytes, item: DecodedImage, max_pixels: int, max_side: Optional[int],
                 max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> None:
    if len(data) == 0:
        item.error_kind, item.error_message = "empty_file", "the object has zero bytes"
        return
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        item.error_kind = "not_an_image"
        item.error_message = f"not a recognised image format (first bytes {data[:8]!r})"
        return
    item.format = img.format
    item.mode = img.mode
    w, h = img.size
    if w * h > max_pixels:
        item.error_kind = "decompression_bomb"
        item.error_message = f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}"
        return
    if max(w, h) > max_aspect_ratio * max(min(w, h), 1):
        item.width, item.height = w, h
        item.error_kind = ErrorKind.UNSUPPORTED_GEOMETRY.value
        item.error_message = f"{w}x{h} is more elongated than {max_aspect_ratio:g}:1"
        return
    if max_side and img.format == "JPEG":
        # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much faster for big photos.
        img.draft("RGB", (max_side, max_side))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except OSError as exc:
        text = str(exc)
        kind = "truncated" if "truncated" in text or "broken data stream" in text else "decode_error"
        item.error_kind, item.error_message = kind, f"{type(exc).__name__}: {text}"
        return
    except (SyntaxError, ValueError, EOFError) as exc:
        item.error_kind, item.error_message = "truncated", f"{type(exc).__name__}: {exc}"
        return
    scale_w, scale_h = img.size[0] / w, img.size[1] / h  # draft() may have shrunk it
    if img.getexif().get(0x0112, 1) != 1:  # transpose only when rotated: it copies the image
        ImageOps.exif_transpose(img, in_place=True)
    rotated = (img.size[0] / scale_w, img.size[1] / scale_h)
    item.width, item.height = round(rotated[0]), round(rotated[1])
    rgb = _to_rgb(img)
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    item.pixels = np.asarray(rgb)
