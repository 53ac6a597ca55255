"""Write one shard's rows as one Parquet file, atomically, named from the shard id."""

from __future__ import annotations

import io

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from workers.records import ARROW_SCHEMA, LabeledImage, records_to_table
from workers.storage import write_bytes_atomic


def write_shard(fs: fsspec.AbstractFileSystem, path: str, rows: list[LabeledImage]) -> int:
    """Write `rows` to `path`; returns the file size. A rerun overwrites, never appends."""
    table = records_to_table(rows)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    # Shards are small (hundreds of rows without pixels): one buffer, one PUT or rename.
    write_bytes_atomic(fs, path, data)
    return len(data)


def read_labels(fs: fsspec.AbstractFileSystem, labels_dir: str) -> pa.Table:
    """All rows under DEST/labels as one table (empty table with the schema if none)."""
    files = sorted(p for p in fs.find(labels_dir) if p.endswith(".parquet")) if fs.exists(labels_dir) else []
    if not files:
        return ARROW_SCHEMA.empty_table()
    tables = [pq.read_table(f, filesystem=fs, schema=ARROW_SCHEMA) for f in files]
    return pa.concat_tables(tables)
