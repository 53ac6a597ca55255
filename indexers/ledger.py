"""The ledger: which object version was labeled, by which labeler/prompt/schema, and when.

It is the bookkeeping projection of the label shards themselves (DEST/labels),
read with Parquet column pruning: one file per shard, committed atomically with
the labels, so the ledger and the labels can never disagree. Incremental runs
plan against it; superseded and deleted objects are recorded by rewriting the
shard file that holds their row (small files, one PUT / rename each).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterable
from typing import Optional

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from indexers.layout import OutputLayout
from workers.records import ARROW_SCHEMA
from workers.storage import write_bytes_atomic

log = logging.getLogger(__name__)

LEDGER_COLUMNS = [
    "uri", "etag", "mtime", "size_bytes", "status", "labeler", "labeler_version", "prompt_version",
    "schema_version", "labeled_at", "shard_id", "deleted_at",
]


def label_files(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> list[str]:
    if not fs.exists(layout.labels_dir):
        return []
    return sorted(p for p in fs.ls(layout.labels_dir, detail=False) if p.endswith(".parquet") and "/.tmp-" not in p)


def ledger_dataset(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> Optional[ds.Dataset]:
    files = label_files(fs, layout)
    if not files:
        return None
    return ds.dataset(files, filesystem=fs, format="parquet", schema=ARROW_SCHEMA)


def ledger_table(fs: fsspec.AbstractFileSystem, layout: OutputLayout, live_only: bool = True) -> pa.Table:
    dataset = ledger_dataset(fs, layout)
    if dataset is None:
        return pa.schema([ARROW_SCHEMA.field(c) for c in LEDGER_COLUMNS]).empty_table()
    flt = ds.field("deleted_at").is_null() if live_only else None
    return dataset.to_table(columns=LEDGER_COLUMNS, filter=flt)


def rewrite_shard(
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    shard_id: str,
    drop_uris: Iterable[str] = (),
    delete_uris: Iterable[str] = (),
    deleted_at: Optional[dt.datetime] = None,
) -> int:
    """Drop superseded rows / mark deleted ones in one shard file. Idempotent; returns rows changed."""
    path = layout.labels_file(shard_id)
    if not fs.exists(path):
        return 0
    drop = pa.array(sorted(set(drop_uris)), pa.string())
    delete = pa.array(sorted(set(delete_uris)), pa.string())
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh, schema=ARROW_SCHEMA)
    changed = 0
    if len(drop):
        keep = pc.invert(pc.is_in(table["uri"], value_set=drop))
        changed += table.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
        table = table.filter(keep)
    if len(delete):
        hit = pc.and_(pc.is_in(table["uri"], value_set=delete), table["deleted_at"].is_null())
        changed += pc.sum(hit.cast(pa.int64())).as_py() or 0
        when = pa.scalar(deleted_at or dt.datetime.now(dt.timezone.utc), ARROW_SCHEMA.field("deleted_at").type)
        column = pc.if_else(hit, when, table["deleted_at"])
        table = table.set_column(table.schema.get_field_index("deleted_at"), "deleted_at", column)
    if changed:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        write_bytes_atomic(fs, path, buffer.getvalue())
        log.info("shard %s: %d row(s) superseded or marked deleted", shard_id, changed)
    return changed
