"""Turn a streamed listing into a frozen, deterministic plan of shards.

Objects are cut, in listing order, into shards of `shard_size`; a shard's id
is a hash of what it holds (uri, size, etag/mtime), so the same archive
contents always give the same shards and the same output file names. The
manifest is written as it streams (one Parquet row group per shard), so a
shard's objects are read back with a single row-group read. A run's plan is
frozen: resuming a run reuses its manifest even if the source changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from humantag.flows.listing import ListingReport
from humantag.indexers.layout import OutputLayout
from humantag.workers.loader import SourceObject
from humantag.workers.records import utcnow
from humantag.workers.storage import StorageOptions, raise_if_full, retrying, write_bytes_atomic

log = logging.getLogger(__name__)

LISTING_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),
        pa.field("etag", pa.string()),
        pa.field("mtime", pa.float64()),
    ]
)
MANIFEST_SCHEMA = LISTING_SCHEMA.append(pa.field("shard_id", pa.string(), nullable=False)).append(
    # Why the object is planned (new / changed / stale / listed) and the label files (shard ids,
    # space-separated) holding older rows of it, which the new row's commit replaces.
    pa.field("reason", pa.string())
).append(pa.field("supersedes", pa.string()))


class ShardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shard_id: str
    index: int  # position in the plan == row group in the manifest
    count: int
    bytes: int


class PlanCounts(BaseModel):
    """What the listing held, against the ledger (incremental plans)."""

    model_config = ConfigDict(extra="forbid")
    listed: int = 0
    new: int = 0
    changed: int = 0
    retry: int = 0
    stale: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0  # entries the listing met but could not list (flows.listing.ListingReport)


class RunPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    source: str
    mode: str = "full"  # full | incremental
    created_at: str
    total_objects: int
    total_bytes: int
    shard_size: int
    shards: list[ShardSpec]
    counts: PlanCounts = PlanCounts()


def shard_id_for(index: int, objects: list[SourceObject]) -> str:
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(f"{obj.uri}\x00{obj.size_bytes}\x00{obj.etag or ''}\x00{obj.mtime or ''}\n".encode())
    return f"s{index:06d}-{digest.hexdigest()[:12]}"


def _chunks(objects: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for obj in objects:
        chunk.append(obj)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build_plan(
    objects: Iterable[SourceObject],
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    run_id: str,
    source: str,
    shard_size: int,
    listing: Optional[ListingReport] = None,
) -> RunPlan:
    """Full plan: every listed object, in listing order."""
    planned = ((obj, "listed", None) for obj in objects)
    return write_plan(planned, fs, layout, run_id, source, shard_size, mode="full", listing=listing)


PlannedObject = tuple[SourceObject, str, Optional[str]]  # object, reason, superseded shard ids (space-separated)


def write_plan(
    planned: Iterable[PlannedObject],
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    run_id: str,
    source: str,
    shard_size: int,
    mode: str,
    counts: Optional[PlanCounts] = None,
    listing: Optional[ListingReport] = None,
) -> RunPlan:
    """Stream planned objects into the manifest, cut into shards; the plan file is written last."""
    manifest_path = layout.manifest_file(run_id)
    fs.makedirs(layout.run_dir(run_id), exist_ok=True)
    shards: list[ShardSpec] = []
    tmp_path = manifest_path + ".partial"
    try:
        _write_manifest(planned, fs, tmp_path, shard_size, shards)
    except BaseException as exc:
        with contextlib.suppress(Exception):  # a full disk or a failed listing leaves no partial manifest
            fs.rm(tmp_path)
        raise_if_full(exc, layout.run_dir(run_id))
        raise
    fs.mv(tmp_path, manifest_path)
    total = sum(s.count for s in shards)
    total_bytes = sum(s.bytes for s in shards)
    plan = RunPlan(
        run_id=run_id,
        source=source,
        mode=mode,
        created_at=utcnow().isoformat(),
        total_objects=total,
        total_bytes=total_bytes,
        shard_size=shard_size,
        shards=shards,
        counts=counts or PlanCounts(listed=total, new=total),
    )
    if listing is not None and listing.total_skipped:
        plan.counts.skipped = listing.total_skipped
        log.warning("%s", listing.describe())
    # The plan file is the "planning finished" marker: written after the manifest.
    write_bytes_atomic(fs, layout.plan_file(run_id), plan.model_dump_json(indent=1).encode())
    return plan


def _write_manifest(planned: Iterable[PlannedObject], fs: fsspec.AbstractFileSystem, tmp_path: str, shard_size: int,
                    shards: list[ShardSpec]) -> None:
    with fs.open(tmp_path, "wb") as fh, pq.ParquetWriter(fh, MANIFEST_SCHEMA, compression="zstd") as writer:
        for index, chunk in enumerate(_chunks(planned, shard_size)):
            objects = [obj for obj, _, _ in chunk]
            shard_id = shard_id_for(index, objects)
            size = sum(o.size_bytes or 0 for o in objects)
            shards.append(ShardSpec(shard_id=shard_id, index=index, count=len(chunk), bytes=size))
            writer.write_table(
                pa.table(
                    {
                        "uri": [o.uri for o in objects],
                        "size_bytes": [o.size_bytes for o in objects],
                        "etag": [o.etag for o in objects],
                        "mtime": [o.mtime for o in objects],
                        "shard_id": [shard_id] * len(chunk),
                        "reason": [reason for _, reason, _ in chunk],
                        "supersedes": [old for _, _, old in chunk],
                    },
                    schema=MANIFEST_SCHEMA,
                ),
                row_group_size=shard_size,
            )
            if index % 100 == 99:
                log.info("planned %d shards (%d objects) so far", index + 1, sum(s.count for s in shards))


def load_plan(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str) -> Optional[RunPlan]:
    path = layout.plan_file(run_id)
    if not fs.exists(path):
        return None
    return RunPlan.model_validate(json.loads(fs.cat_file(path)))


def read_shard_rows(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str, shard: ShardSpec,
                    options: Optional[StorageOptions] = None) -> list[dict[str, Any]]:
    def read() -> pa.Table:
        with fs.open(layout.manifest_file(run_id), "rb") as fh:
            return pq.ParquetFile(fh).read_row_group(shard.index)

    # An S3 outage while a shard starts is ridden out here, not by failing the shard.
    table = retrying(options or StorageOptions(), f"reading the manifest of {run_id}", read)
    rows = table.to_pylist()
    if not rows or rows[0]["shard_id"] != shard.shard_id:
        raise RuntimeError(f"manifest row group {shard.index} does not hold shard {shard.shard_id}")
    return rows


def read_shard_objects(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str, shard: ShardSpec) -> list[SourceObject]:
    rows = read_shard_rows(fs, layout, run_id, shard)
    return [SourceObject(uri=r["uri"], size_bytes=r["size_bytes"], etag=r["etag"], mtime=r["mtime"]) for r in rows]
