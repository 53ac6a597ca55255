"""Read and decode a batch of source objects: runs as a Ray task, never in the model actor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from workers.images import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from workers.storage import StorageOptions, StorageUnavailable, classify_storage_error, filesystem


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


def load_batch(objects: list[SourceObject], decode: DecodeOptions, storage: StorageOptions) -> list[DecodedImage]:
    """One DecodedImage per object, in order. Raises only when storage itself is unavailable."""
    return [load_one(obj, decode, storage) for obj in objects]


def load_one(obj: SourceObject, decode: DecodeOptions, storage: StorageOptions) -> DecodedImage:
    item = DecodedImage(uri=obj.uri, etag=obj.etag, mtime=obj.mtime, size_bytes=obj.size_bytes)
    if obj.size_bytes is not None and obj.size_bytes > decode.max_bytes:
        item.error_kind = "too_large"
        item.error_message = f"{obj.size_bytes} bytes exceeds the limit of {decode.max_bytes}"
        return item
    started = time.perf_counter()
    try:
        fs, path = filesystem(obj.uri, storage)
        data = fs.cat_file(path)
    except FileNotFoundError:
        item.error_kind, item.error_message = "missing", "the object was listed but no longer exists"
        return item
    except IsADirectoryError:
        item.error_kind, item.error_message = "read_error", "the path is a directory"
        return item
    except Exception as exc:  # noqa: BLE001 - classified below
        mapped = classify_storage_error(exc)
        if isinstance(mapped, StorageUnavailable):
            raise mapped from exc
        item.error_kind, item.error_message = "read_error", f"{type(exc).__name__}: {exc}"[:2000]
        return item
    finally:
        item.read_ms = (time.perf_counter() - started) * 1000.0
    if item.size_bytes is None:
        item.size_bytes = len(data)
    return decode_image(data, item, max_pixels=decode.max_pixels, max_side=decode.max_side)
