"""Stream the image objects under a source URL, in a deterministic order.

Memory stays bounded whatever the archive size: local folders are walked
directory by directory, S3 prefixes page by page (1,000 keys a page, in the
lexicographic order S3 guarantees). Each object keeps uri, size and etag (S3)
or mtime (local).

A local listing never opens an entry and never aborts on one: FIFOs, sockets,
devices, symlink loops and dangling symlinks are listed (from lstat when stat
fails) and become error rows when read (workers.reads.read_bytes opens only
regular files). A name that is not valid UTF-8 cannot be a uri: it is logged
and counted in `ListingReport.skipped`, which the plan records.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.asyn import sync
from pydantic import BaseModel, ConfigDict, Field

from humantag.flows.errors import UserError
from humantag.workers.loader import SourceObject
from humantag.workers.storage import (StorageAccessDenied, StorageOptions, classify_storage_error, filesystem, protocol_of,
                                      retrying)

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
_PAGE = 1000


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(description="Image archive: a folder, file:///path, or s3://bucket/prefix.",
                     json_schema_extra={"argument": True})
    include: tuple[str, ...] = Field(default=(), description="Only keys matching this glob (relative to SOURCE; repeatable).")
    exclude: tuple[str, ...] = Field(default=(), description="Skip keys matching this glob (repeatable).")
    extensions: tuple[str, ...] = Field(default=DEFAULT_EXTENSIONS, description="File name endings to label (repeatable).",
                                        json_schema_extra={"flag": "--extension"})

    def accepts(self, relative: str) -> bool:
        """`relative` is the key below the source root, with '/' separators."""
        name = posixpath.basename(relative)
        if name.startswith("."):
            return False
        if not relative.lower().endswith(tuple(e.lower() for e in self.extensions)):
            return False
        if self.include and not any(fnmatch.fnmatchcase(relative, g) for g in self.include):
            return False
        return not any(fnmatch.fnmatchcase(relative, g) for g in self.exclude)


@dataclass
class ListingReport:
    """What a listing met but could not yield as an object, by reason (e.g. undecodable_name)."""

    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(where)
        log.info("listing: skipped %s (%s)", where, reason.replace("_", " "))

    def describe(self) -> str:
        """One line for the log once the listing is done."""
        reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(self.skipped.items()))
        return f"the listing skipped {self.total_skipped} entr{'y' if self.total_skipped == 1 else 'ies'} ({reasons}), e.g. {', '.join(self.examples)}"

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())


def iter_source(spec: SourceSpec, storage: StorageOptions, workers: int = 1,
                report: Optional[ListingReport] = None) -> Iterator[SourceObject]:
    """Yield accepted objects; raises UserError when the source can't be listed.

    Entries that cannot be objects are counted in `report` (one is made if not given).

    With workers > 1, an S3 source's top-level prefixes are listed in parallel
    (each spooled to a temporary file, so memory stays bounded) and yielded in
    prefix order: deterministic, though not the single-listing order.
    """
    protocol = protocol_of(spec.url)
    fs, root = filesystem(spec.url, storage)
    report = report if report is not None else ListingReport()
    try:
        if protocol == "file":
            yield from _iter_local(spec, root, report)
        elif protocol in ("s3", "s3a") and workers > 1:
            yield from _iter_s3_parallel(spec, fs, root, storage, workers)
        elif protocol in ("s3", "s3a"):
            yield from _iter_s3(spec, fs, root, storage)
        else:
            yield from _iter_generic(spec, fs, root)
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise UserError(f"source {spec.url} does not exist") from exc
    except Exception as exc:
        mapped = classify_storage_error(exc)
        if isinstance(mapped, StorageAccessDenied):
            raise UserError(f"cannot list {spec.url}: {mapped}") from exc
        raise UserError(f"cannot list {spec.url}: {mapped}") from exc


def _iter_local(spec: SourceSpec, root: str, report: ListingReport) -> Iterator[SourceObject]:
    if not os.path.exists(root):
        raise UserError(f"source {spec.url} does not exist")
    if os.path.isfile(root):
        raise UserError(f"source {spec.url} is a file; give the folder that holds the images")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"source {spec.url} is not readable")
    for dirpath, dirnames, filenames in os.walk(root):
        kept = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if _decodable(d):
                kept.append(d)
            else:
                report.skip("undecodable_name", _printable(os.path.join(dirpath, d)) + "/")
        dirnames[:] = kept
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if not _decodable(name):
                if spec.accepts(_printable(name)):
                    report.skip("undecodable_name", _printable(full))
                continue
            relative = os.path.relpath(full, root).replace(os.sep, "/")
            if not spec.accepts(relative):
                continue
            try:
                st = os.stat(full)
            except FileNotFoundError:
                if not os.path.islink(full):
                    continue  # vanished during the walk
                st = os.lstat(full)  # a dangling symlink: listed, its row says so
            except OSError:
                st = os.lstat(full)  # a symlink loop (ELOOP) and the like: listed, its row says so
            yield SourceObject(uri=f"file://{full}", size_bytes=st.st_size, mtime=st.st_mtime)


def _decodable(name: str) -> bool:
    """os.walk gives undecodable bytes as lone surrogates: such a name cannot be a uri or a Parquet string."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _split_s3(root: str) -> tuple[str, str]:
    bucket, _, key = root.partition("/")
    if not bucket:
        raise UserError("an s3:// source needs a bucket: s3://bucket[/prefix]")
    return bucket, (key.rstrip("/") + "/" if key else "")


def _iter_s3(spec: SourceSpec, fs: fsspec.AbstractFileSystem, root: str, storage: StorageOptions,
             delimiter: str = "", base: Optional[str] = None) -> Iterator[SourceObject]:
    """`root` is bucket/prefix to list; `base` the source root that relative keys are taken from.

    One ListObjectsV2 page at a time (no dircache). A page that fails because S3 is unreachable
    is asked for again, with the same continuation token, within the storage retry budget: an
    outage in the middle of a listing of millions of keys costs a wait, not the listing.
    """
    bucket, prefix = _split_s3(root)
    _, base_prefix = _split_s3(base or root)
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": _PAGE}
    if delimiter:
        request["Delimiter"] = delimiter
    while True:
        page = retrying(storage, f"listing s3://{root}",
                        lambda: sync(fs.loop, fs._call_s3, "list_objects_v2", **request))
        for item in page.get("Contents", []):
            key = item["Key"]
            if not spec.accepts(key[len(base_prefix):]):
                continue
            modified = item.get("LastModified")
            yield SourceObject(
                uri=f"s3://{bucket}/{key}",
                size_bytes=int(item.get("Size", 0)),
                etag=(item.get("ETag") or "").strip('"') or None,
                mtime=modified.timestamp() if modified is not None else None,
            )
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        request["ContinuationToken"] = token


def _top_level_prefixes(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    bucket, prefix = _split_s3(root)

    async def collect() -> list[str]:
        return [
            info["name"] async for info in fs._iterdir(bucket, delimiter="/", prefix=prefix)
            if info.get("type") == "directory"
        ]

    return sorted(sync(fs.loop, collect))


def _spool(objects: Iterator[SourceObject], path: str) -> None:
    with pq.ParquetWriter(path, _SPOOL_SCHEMA) as writer:
        batch: list[SourceObject] = []
        for obj in objects:
            batch.append(obj)
            if len(batch) >= 5000:
                writer.write_table(_spool_table(batch))
                batch = []
        if batch:
            writer.write_table(_spool_table(batch))


_SPOOL_SCHEMA = pa.schema([("uri", pa.string()), ("size_bytes", pa.int64()), ("etag", pa.string()), ("mtime", pa.float64())])


def _spool_table(batch: list[SourceObject]) -> pa.Table:
    return pa.table(
        {
            "uri": [o.uri for o in batch],
            "size_bytes": [o.size_bytes for o in batch],
            "etag": [o.etag for o in batch],
            "mtime": [o.mtime for o in batch],
        },
        schema=_SPOOL_SCHEMA,
    )


def _iter_s3_parallel(spec: SourceSpec, fs: fsspec.AbstractFileSystem, root: str, storage: StorageOptions,
                      workers: int) -> Iterator[SourceObject]:
    # Objects directly under the root first (one delimited listing), then each sub-prefix.
    yield from _iter_s3(spec, fs, root, storage, delimiter="/")
    prefixes = retrying(storage, f"listing s3://{root}", lambda: _top_level_prefixes(fs, root))
    if not prefixes:
        return
    with tempfile.TemporaryDirectory(prefix="humantag-list-") as tmp, ThreadPoolExecutor(workers) as pool:
        parts = [os.path.join(tmp, f"{i:06d}.parquet") for i in range(len(prefixes))]
        futures = [pool.submit(_spool, _iter_s3(spec, fs, p, storage, base=root), part) for p, part in zip(prefixes, parts)]
        for future, part in zip(futures, parts):
            future.result()
            for batch in pq.ParquetFile(part).iter_batches(5000):
                for row in batch.to_pylist():
                    yield SourceObject(**row)
            os.remove(part)


def _iter_generic(spec: SourceSpec, fs: fsspec.AbstractFileSystem, root: str) -> Iterator[SourceObject]:
    for dirpath, _dirs, files in fs.walk(root, detail=True):
        for name in sorted(files):
            info = files[name]
            full = posixpath.join(dirpath, name)
            relative = full[len(root):].lstrip("/")
            if spec.accepts(relative):
                yield SourceObject(
                    uri=fs.unstrip_protocol(full),
                    size_bytes=info.get("size"),
                    etag=info.get("ETag") or info.get("etag"),
                    mtime=None,
                )
