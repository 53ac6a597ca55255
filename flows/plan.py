"""Turn a streamed listing into a frozen, deterministic plan of shards.

Objects are cut, in listing order, into shards of `shard_size`; a shard's id
is a hash of what it holds (uri, size, etag/mtime), so the same archive
contents always give the same shards and the same output file names. The
manifest is written as it streams (one Parquet row group per shard), so a
shard's objects are read back with a single row-group read. A run's plan is
frozen: resuming a run reuses its manifest even if the source changed since.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from indexers.layout import OutputLayout
from workers.loader import SourceObject
from workers.records import utcnow
from workers.storage import write_bytes_atomic

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64()),
        pa.field("etag", pa.string()),
        pa.field("mtime", pa.float64()),
        pa.field("shard_id", pa.string(), nullable=False),
    ]
)


class ShardSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    shard_id: str
    index: int  # position in the plan == row group in the manifest
    count: int
    bytes: int


class RunPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    source: str
    created_at: str
    total_objects: int
    total_bytes: int
    shard_size: int
    shards: list[ShardSpec]


def shard_id_for(index: int, objects: list[SourceObject]) -> str:
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(f"{obj.uri}\x00{obj.size_bytes}\x00{obj.etag or ''}\x00{obj.mtime or ''}\n".encode())
    return f"s{index:06d}-{digest.hexdigest()[:12]}"


def _chunks(objects: Iterable[SourceObject], size: int) -> Iterator[list[SourceObject]]:
    chunk: list[SourceObject] = []
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
) -> RunPlan:
    """Stream `objects` into the manifest and return the plan (written last)."""
    manifest_path = layout.manifest_file(run_id)
    fs.makedirs(layout.run_dir(run_id), exist_ok=True)
    shards: list[ShardSpec] = []
    total_bytes = 0
    tmp_path = manifest_path + ".partial"
    with fs.open(tmp_path, "wb") as fh, pq.ParquetWriter(fh, MANIFEST_SCHEMA, compression="zstd") as writer:
        for index, chunk in enumerate(_chunks(objects, shard_size)):
            shard_id = shard_id_for(index, chunk)
            size = sum(o.size_bytes or 0 for o in chunk)
            total_bytes += size
            shards.append(ShardSpec(shard_id=shard_id, index=index, count=len(chunk), bytes=size))
            writer.write_table(
                pa.table(
                    {
                        "uri": [o.uri for o in chunk],
                        "size_bytes": [o.size_bytes for o in chunk],
                        "etag": [o.etag for o in chunk],
                        "mtime": [o.mtime for o in chunk],
                        "shard_id": [shard_id] * len(chunk),
                    },
                    schema=MANIFEST_SCHEMA,
                ),
                row_group_size=shard_size,
            )
            if index % 100 == 99:
                log.info("planned %d shards (%d objects) so far", index + 1, sum(s.count for s in shards))
    fs.mv(tmp_path, manifest_path)
    plan = RunPlan(
        run_id=run_id,
        source=source,
        created_at=utcnow().isoformat(),
        total_objects=sum(s.count for s in shards),
        total_bytes=total_bytes,
        shard_size=shard_size,
        shards=shards,
    )
    # The plan file is the "planning finished" marker: written after the manifest.
    write_bytes_atomic(fs, layout.plan_file(run_id), plan.model_dump_json(indent=1).encode())
    return plan


def load_plan(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str) -> Optional[RunPlan]:
    path = layout.plan_file(run_id)
    if not fs.exists(path):
        return None
    return RunPlan.model_validate(json.loads(fs.cat_file(path)))


def read_shard_objects(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str, shard: ShardSpec) -> list[SourceObject]:
    with fs.open(layout.manifest_file(run_id), "rb") as fh:
        table = pq.ParquetFile(fh).read_row_group(shard.index)
    rows = table.to_pylist()
    if not rows or rows[0]["shard_id"] != shard.shard_id:
        raise RuntimeError(f"manifest row group {shard.index} does not hold shard {shard.shard_id}")
    return [SourceObject(uri=r["uri"], size_bytes=r["size_bytes"], etag=r["etag"], mtime=r["mtime"]) for r in rows]
