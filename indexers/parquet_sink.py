"""Write one shard's rows as one Parquet file, atomically, named from the shard id."""

from __future__ import annotations

import io

import fsspec
import pyarrow.parquet as pq

from humantag.workers.records import LabeledImage, records_to_table
from humantag.workers.storage import write_bytes_atomic


def write_shard(fs: fsspec.AbstractFileSystem, path: str, rows: list[LabeledImage]) -> int:
    """Write `rows` to `path`; returns the file size. A rerun overwrites, never appends."""
    table = records_to_table(rows)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    # Shards are small (hundreds of rows without pixels): one buffer, one PUT or rename.
    write_bytes_atomic(fs, path, data)
    return len(data)
