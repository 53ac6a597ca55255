"""Label one shard: Ray read+decode tasks feed the replica pool, rows go to one Parquet file.

At most `replicas * inflight_per_replica` batches of a shard are in flight;
decoding runs in Ray tasks beside the actors, and an actor is handed a batch
only once its decoded pixels are in the object store.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

import fsspec
import ray
from pydantic import BaseModel, ConfigDict, Field

from humantag.flows.config import RunConfig
from humantag.flows.plan import ShardSpec, read_shard_rows
from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import RowKey, rewrite_shard, row_key
from humantag.indexers.parquet_sink import write_shard
from humantag.workers.actors import LabelerPool
from humantag.workers.loader import DecodeOptions, SourceObject, load_batch
from humantag.workers.records import LabeledImage, utcnow
from humantag.workers.storage import StorageOptions, write_bytes_atomic

log = logging.getLogger(__name__)

BatchDone = Callable[[int, int], None]  # (images, errors) -> None, for progress bars


class ShardStats(BaseModel):
    """What a shard's marker holds; addable across shards for the run summary."""

    model_config = ConfigDict(extra="forbid")
    shard_id: str
    images: int
    ok: int
    errors: dict[str, int] = Field(default_factory=dict)
    gated: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    read_ms: float = 0.0
    decode_ms: float = 0.0
    label_ms: float = 0.0
    parquet: str
    labeler: str
    labeler_version: str
    started_at: str
    finished_at: str


@ray.remote
def _load_batch_task(objects: list[SourceObject], decode: DecodeOptions, storage: StorageOptions) -> list[Any]:
    return load_batch(objects, decode, storage)


def _batches(objects: list[SourceObject], size: int) -> list[list[SourceObject]]:
    return [objects[i : i + size] for i in range(0, len(objects), size)]


def label_objects(
    objects: list[SourceObject],
    pool: LabelerPool,
    config: RunConfig,
    decode: DecodeOptions,
    run_id: str,
    shard_id: str,
    on_batch: Optional[BatchDone] = None,
) -> list[LabeledImage]:
    batches = _batches(objects, config.labeler_options.batch_size)
    results: dict[int, list[LabeledImage]] = {}
    pending: dict[Any, int] = {}  # result ref -> batch index
    max_inflight = pool.size * config.pool.inflight_per_replica
    queue = collections.deque(enumerate(batches))
    load = _load_batch_task.options(num_cpus=config.pool.decode_cpus, max_retries=2)

    def collect(block: bool) -> None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
        for ref in ready:
            batch_index = pending.pop(ref)
            pool.done(ref)
            rows = ray.get(ref)  # raises RayActorError etc.: an infrastructure failure of the shard
            results[batch_index] = rows
            if on_batch:
                on_batch(len(rows), sum(r.status == "error" for r in rows))

    try:
        while queue or pending:
            while queue and len(pending) < max_inflight:
                batch_index, batch = queue.popleft()
                decoded_ref = load.remote(batch, decode, config.storage)
                pending[pool.submit(decoded_ref, run_id, shard_id)] = batch_index
            if pending:
                collect(block=True)
    finally:
        pool.abandon(list(pending))  # the shard failed: its other batches would only hold replicas up
    return [row for index in range(len(batches)) for row in results[index]]


def run_shard(
    shard: ShardSpec,
    pool: LabelerPool,
    config: RunConfig,
    decode: DecodeOptions,
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    run_id: str,
    on_batch: Optional[BatchDone] = None,
) -> ShardStats:
    started = time.perf_counter()
    started_at = utcnow().isoformat()
    planned = read_shard_rows(fs, layout, run_id, shard)
    objects = [SourceObject(uri=r["uri"], size_bytes=r["size_bytes"], etag=r["etag"], mtime=r["mtime"]) for r in planned]
    rows = label_objects(objects, pool, config, decode, run_id, shard.shard_id, on_batch)
    if len(rows) != len(objects):
        raise RuntimeError(f"shard {shard.shard_id}: {len(rows)} rows for {len(objects)} objects")
    parquet_path = layout.labels_file(shard.shard_id)
    write_shard(fs, parquet_path, rows)
    supersede_old_rows(fs, layout, shard.shard_id, planned, rows)
    stats = shard_stats(shard.shard_id, rows, parquet_path, labeler=config.labeler, bytes=shard.bytes,
                        wall_s=time.perf_counter() - started, started_at=started_at, finished_at=utcnow().isoformat())
    # The marker is written last: its presence means the Parquet file is complete.
    write_bytes_atomic(fs, layout.marker_file(run_id, shard.shard_id), stats.model_dump_json().encode())
    return stats


def shard_stats(shard_id: str, rows: list[LabeledImage], parquet: str, labeler: str, bytes: int, wall_s: float,
                started_at: str, finished_at: str) -> ShardStats:
    """The marker of a shard whose rows are `rows`."""
    errors: dict[str, int] = collections.Counter(r.error_kind for r in rows if r.status == "error")  # type: ignore[assignment]
    first = rows[0] if rows else None
    return ShardStats(
        shard_id=shard_id,
        images=len(rows),
        ok=sum(r.status == "ok" for r in rows),
        errors=dict(errors),
        gated=sum(bool(r.gated) for r in rows),
        bytes=bytes,
        wall_s=wall_s,
        read_ms=sum(r.read_ms or 0 for r in rows),
        decode_ms=sum(r.decode_ms or 0 for r in rows),
        label_ms=sum(r.label_ms or 0 for r in rows),
        parquet=parquet,
        labeler=first.labeler if first else labeler,
        labeler_version=first.labeler_version if first else "",
        started_at=started_at,
        finished_at=finished_at,
    )


_rewrite_lock = threading.Lock()


def supersede_old_rows(fs: fsspec.AbstractFileSystem, layout: OutputLayout, shard_id: str,
                       planned: list[dict[str, Any]], rows: list[LabeledImage]) -> None:
    """Drop the older rows of this shard's objects from the label files that hold them (the plan names them).

    Part of every commit, full or incremental: runs after the new shard file is written and
    before its marker, so a crash in between redoes the shard and this step, both idempotent.
    Only rows older than the new one go (indexers.ledger.LIVE_ROW_ORDER): a concurrent run's
    newer row survives, and the older of two duplicates is never the one read.
    """
    new_keys = {row.uri: row_key({"labeled_at": row.labeled_at, "shard_id": shard_id}) for row in rows}
    by_old: dict[str, dict[str, RowKey]] = collections.defaultdict(dict)
    for row in planned:
        for old in (row.get("supersedes") or "").split():
            if old != shard_id and row["uri"] in new_keys:
                by_old[old][row["uri"]] = new_keys[row["uri"]]
    # Two shards may supersede rows of the same old file: serialise the read-modify-write.
    with _rewrite_lock:
        for old, keys in sorted(by_old.items()):
            rewrite_shard(fs, layout, old, supersede=keys)


def load_markers(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str) -> dict[str, ShardStats]:
    directory = layout.markers_dir(run_id)
    if not fs.exists(directory):
        return {}
    markers = {}
    for path in fs.find(directory):
        if path.endswith(".json") and not path.rsplit("/", 1)[-1].startswith("."):
            stats = ShardStats.model_validate(json.loads(fs.cat_file(path)))
            markers[stats.shard_id] = stats
    return markers
