"""JPEG thumbnails of indexed images, made by the server from the source bytes.

The caller passes a uri it got from the search backend (never one from a
client). The bytes are read by `workers.reads.read_bytes` (s3:// with the
server's credentials; regular files only, so a FIFO under an image name is a
422 at once, never a blocked server thread; a read timeout; an S3 outage is a
503 after a few seconds), refused above `max_source_bytes`,
decoded by `workers.images.decode_image` (EXIF rotation, decompression bombs
refused from the header, CMYK/16-bit/palette to RGB) and shrunk to `size_px`
on the long side. Finished thumbnails stay in a byte-bounded LRU cache; at
most `max_decodes` images are decoded at once, so a burst of requests for big
photos cannot take all the server's memory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from PIL import Image

from humantag.workers.images import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from humantag.workers.records import ErrorKind
from humantag.workers.reads import UnreadableObject, read_bytes
from humantag.workers.storage import StorageAccessDenied, StorageOptions, StorageUnavailable

log = logging.getLogger("humantag.web.thumbnails")

DEFAULT_MAX_SOURCE_BYTES = 64 * 2**20
DEFAULT_CACHE_BYTES = 64 * 2**20
JPEG_QUALITY = 82


class ThumbnailError(Exception):
    """The thumbnail cannot be made. `status` is the HTTP status, `kind` a short machine word."""

    status = 422

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class SourceMissing(ThumbnailError):
    status = 404


class SourceUnreadable(ThumbnailError):
    """Too large, not an image, truncated, a decompression bomb: the bytes are there but unusable."""

    status = 422


class StorageFailed(ThumbnailError):
    """The storage refused or could not be reached: not the image's fault, maybe temporary."""

    status = 503


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    etag: str
    width: int
    height: int


def thumbnail_etag(doc_id: str, version: str, size_px: int) -> str:
    """A strong validator computable before reading the image: id, source version and size."""
    digest = hashlib.sha256(f"{doc_id}\0{version}\0{size_px}".encode()).hexdigest()[:24]
    return f'"{digest}"'


class _LRU:
    """Thread-safe LRU of thumbnails, bounded by the total of their bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[Thumbnail]:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: Thumbnail) -> None:
        if len(item.data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old.data)
            self._items[key] = item
            self._bytes += len(item.data)
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted.data)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class ThumbnailMaker:
    def __init__(
        self,
        storage: StorageOptions,
        size_px: int = 256,
        max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_decodes: Optional[int] = None,
    ) -> None:
        if not 16 <= size_px <= 2048:
            raise ValueError(f"thumbnail size must be 16..2048 pixels, got {size_px}")
        # A page waits for its thumbnails: an outage answers 503 within seconds, not after a run's budget.
        self.storage = storage.model_copy(update={"retry_budget_s": min(storage.retry_budget_s, 5.0)})
        self.size_px = size_px
        self.max_source_bytes = max_source_bytes
        self.max_pixels = max_pixels
        self.cache = _LRU(cache_bytes)
        self._decodes = threading.BoundedSemaphore(max_decodes or max(2, min(8, os.cpu_count() or 2)))

    def etag(self, doc_id: str, version: str) -> str:
        return thumbnail_etag(doc_id, version, self.size_px)

    def get(self, doc_id: str, uri: str, version: str) -> Thumbnail:
        """The thumbnail of the image at `uri` (from the index), cached by id + source version."""
        etag = self.etag(doc_id, version)
        cached = self.cache.get(etag)
        if cached is not None:
            return cached
        data = self._read(uri)
        with self._decodes:
            thumb = self._render(uri, data, etag)
        self.cache.put(etag, thumb)
        return thumb

    def read_source(self, uri: str) -> bytes:
        """The source image's bytes, with the same guards as a thumbnail (size limit, storage errors)."""
        return self._read(uri)

    def _read(self, uri: str) -> bytes:
        # read_bytes opens regular files only and never blocks past the storage's read timeout:
        # a FIFO under an image name cannot hold a server thread.
        try:
            return read_bytes(uri, self.storage, max_bytes=self.max_source_bytes)
        except UnreadableObject as exc:
            if exc.kind == ErrorKind.MISSING:
                raise SourceMissing(exc.kind.value, "the source image no longer exists") from None
            if exc.kind == ErrorKind.TOO_LARGE:
                raise SourceUnreadable(
                    exc.kind.value, f"the source image is larger than {self.max_source_bytes // 2**20} MiB"
                ) from None
            log.warning("reading %s for a thumbnail failed: %s", uri, exc.message)
            raise SourceUnreadable(exc.kind.value, _one_line(exc.message)) from None
        except StorageAccessDenied:
            raise StorageFailed("access_denied", "the storage refused the server's credentials") from None
        except StorageUnavailable:
            raise StorageFailed("storage_unavailable", "the storage could not be reached; try again") from None

    def _render(self, uri: str, data: bytes, etag: str) -> Thumbnail:
        # The project's decoder: EXIF transpose, bomb check before allocating, any mode to RGB;
        # JPEGs are decoded directly at a reduced scale (draft) close to twice the thumbnail size.
        decoded = decode_image(data, DecodedImage(uri=uri), max_pixels=self.max_pixels, max_side=self.size_px * 2)
        if not decoded.ok:
            raise SourceUnreadable(decoded.error_kind or "decode_error", _one_line(decoded.error_message))
        image = Image.fromarray(decoded.pixels)
        image.thumbnail((self.size_px, self.size_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        return Thumbnail(data=out.getvalue(), etag=etag, width=image.width, height=image.height)


def _one_line(message: Optional[str], limit: int = 200) -> str:
    text = " ".join((message or "the image could not be decoded").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
