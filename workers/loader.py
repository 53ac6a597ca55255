"""Read and decode a batch of source objects: runs as a Ray task, never in the model actor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from humantag.workers.images import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from humantag.workers.records import ErrorKind
from humantag.workers.reads import UnreadableObject, read_bytes
from humantag.workers.storage import StorageAccessDenied, StorageOptions


@dataclass(frozen=True)
class SourceObject:
    """One listed object, as the manifest holds it."""

    uri: str
    size_bytes: Optional[int] = None
    etag: Optional[str] = None  # S3 ETag
    mtime: Optional[float] = None  # POSIX seconds (local files, or S3 LastModified)


class DecodeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="Images with more pixels are error rows (decompression_bomb).")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Files larger than this are error rows (too_large).")
    max_side: Optional[int] = Field(default=None, ge=1, description="Shrink images to this longer side before labeling. Default: the labeler's own.")
    max_aspect_ratio: float = Field(
        default=DEFAULT_MAX_ASPECT_RATIO, ge=1,
        description="Longest side / shortest side above which an image is an unsupported_geometry row "
        "(a 1x100000 strip has no size a labeler can resize it to).",
    )


def load_batch(objects: list[SourceObject], decode: DecodeOptions, storage: StorageOptions) -> list[DecodedImage]:
    """One DecodedImage per object, in order. Raises only when storage itself is unavailable."""
    return [load_one(obj, decode, storage) for obj in objects]


def load_one(obj: SourceObject, decode: DecodeOptions, storage: StorageOptions) -> DecodedImage:
    item = DecodedImage(uri=obj.uri, etag=obj.etag, mtime=obj.mtime, size_bytes=obj.size_bytes)
    if obj.size_bytes is not None and obj.size_bytes > decode.max_bytes:
        item.error_kind = ErrorKind.TOO_LARGE.value
        item.error_message = f"{obj.size_bytes} bytes exceeds the limit of {decode.max_bytes}"
        return item
    started = time.perf_counter()
    try:
        data = read_bytes(obj.uri, storage, max_bytes=decode.max_bytes)
    except UnreadableObject as exc:
        item.error_kind, item.error_message = exc.kind.value, exc.message
        return item
    except StorageAccessDenied as exc:
        item.error_kind, item.error_message = ErrorKind.READ_ERROR.value, str(exc)[:2000]
        return item
    finally:  # StorageUnavailable (the retry budget spent) fails the shard: an infrastructure error
        item.read_ms = (time.perf_counter() - started) * 1000.0
    if item.size_bytes is None:
        item.size_bytes = len(data)
    return decode_image(data, item, max_pixels=decode.max_pixels, max_side=decode.max_side,
                        max_aspect_ratio=decode.max_aspect_ratio)
