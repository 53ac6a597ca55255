"""The ledger: which object version was labeled, by which labeler/prompt/schema, and when.

It is the bookkeeping projection of the label shards themselves (DEST/labels),
read with Parquet column pruning: one file per shard, committed atomically with
the labels, so the ledger and the labels can never disagree. Incremental runs
plan against it; superseded and deleted objects are recorded by rewriting the
shard file that holds their row (small files, one PUT / rename each).

The live row (defined here, once; every reader uses it): of all rows of a uri,
the one with the greatest (labeled_at, shard_id) is the uri's current row; the
uri is live when that row's deleted_at is null. Commits drop the older rows of
the uris they label, but readers never rely on that: a row left behind by a
crash or by two concurrent runs is simply not the newest, so it is never read.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Optional

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from humantag.indexers.layout import OutputLayout
from humantag.workers.records import ARROW_SCHEMA
from humantag.workers.storage import arrow_filesystem, write_bytes_atomic

log = logging.getLogger(__name__)

LEDGER_COLUMNS = [
    "uri", "etag", "mtime", "size_bytes", "status", "labeler", "labeler_version", "prompt_version",
    "schema_version", "labeled_at", "shard_id", "deleted_at",
]

# SQL (DuckDB) ordering of the rows of one uri, newest first: the first is the uri's current row.
LIVE_ROW_ORDER = "labeled_at DESC NULLS LAST, shard_id DESC"

RowKey = tuple[dt.datetime, str]  # (labeled_at, shard_id): a greater key is a newer row
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def current_rows_sql(source: str, columns: str = "*") -> str:
    """SQL: the current row of every uri in `source` (a table or view), tombstones included."""
    return f"SELECT {columns} FROM {source} QUALIFY row_number() OVER (PARTITION BY uri ORDER BY {LIVE_ROW_ORDER}) = 1"


def live_rows_sql(source: str, columns: str = "*") -> str:
    """SQL: the live rows of `source`, one per uri (the current row, unless it marks a deletion)."""
    return (f"SELECT {columns} FROM {source} QUALIFY row_number() OVER "
            f"(PARTITION BY uri ORDER BY {LIVE_ROW_ORDER}) = 1 AND deleted_at IS NULL")


def row_key(row: Mapping[str, Any]) -> RowKey:
    """The Python twin of LIVE_ROW_ORDER: rows of one uri compare by this key, the greatest is current."""
    labeled_at = row.get("labeled_at") or _EPOCH
    if labeled_at.tzinfo is None:
        labeled_at = labeled_at.replace(tzinfo=dt.timezone.utc)
    return labeled_at, row.get("shard_id") or ""


def current_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """uri → its current row, of rows read in any order (tombstones included)."""
    current: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = current.get(row["uri"])
        if seen is None or row_key(row) > row_key(seen):
            current[row["uri"]] = row
    return current


def live_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """uri → its live row (see the module docstring)."""
    return {uri: row for uri, row in current_rows(rows).items() if row.get("deleted_at") is None}


def label_files(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> list[str]:
    if not fs.exists(layout.labels_dir):
        return []
    return sorted(p for p in fs.ls(layout.labels_dir, detail=False) if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith("."))


def ledger_dataset(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> Optional[ds.Dataset]:
    files = label_files(fs, layout)
    if not files:
        return None
    return ds.dataset(files, filesystem=arrow_filesystem(fs), format="parquet", schema=ARROW_SCHEMA)


def _duckdb() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def ledger_table(fs: fsspec.AbstractFileSystem, layout: OutputLayout, live_only: bool = True) -> pa.Table:
    """The ledger columns of the current row of every uri (only live ones with `live_only`)."""
    dataset = ledger_dataset(fs, layout)
    if dataset is None:
        return pa.schema([ARROW_SCHEMA.field(c) for c in LEDGER_COLUMNS]).empty_table()
    con = _duckdb()
    try:
        con.register("ledger", dataset)
        columns = ", ".join(LEDGER_COLUMNS)
        sql = live_rows_sql("ledger", columns) if live_only else current_rows_sql("ledger", columns)
        return con.sql(sql + " ORDER BY uri").to_arrow_table()
    finally:
        con.close()


def superseded_rows(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> dict[str, dict[str, RowKey]]:
    """Rows that are not the current row of their uri, by the file holding them: shard id → {uri: current key}."""
    dataset = ledger_dataset(fs, layout)
    if dataset is None:
        return {}
    con = _duckdb()
    try:
        con.register("ledger", dataset)
        rows = con.sql(
            "SELECT shard_id, uri, first_value(labeled_at) OVER w AS cur_at, first_value(shard_id) OVER w AS cur_shard "
            f"FROM ledger WINDOW w AS (PARTITION BY uri ORDER BY {LIVE_ROW_ORDER}) "
            "QUALIFY row_number() OVER w > 1"
        ).fetchall()
    finally:
        con.close()
    by_shard: dict[str, dict[str, RowKey]] = {}
    for shard_id, uri, cur_at, cur_shard in rows:
        by_shard.setdefault(shard_id, {})[uri] = row_key({"labeled_at": cur_at, "shard_id": cur_shard})
    return by_shard


def rewrite_shard(
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    shard_id: str,
    supersede: Optional[Mapping[str, RowKey]] = None,
    delete_uris: Iterable[str] = (),
    deleted_at: Optional[dt.datetime] = None,
) -> int:
    """Drop superseded rows / mark deleted ones in one shard file. Idempotent; returns rows changed.

    `supersede`: uri → key of the row that replaces it; a row is dropped only if it is older than
    that (LIVE_ROW_ORDER), so a stale plan or a slow concurrent run can never drop a newer row.
    """
    path = layout.labels_file(shard_id)
    if not fs.exists(path):
        return 0
    delete = pa.array(sorted(set(delete_uris)), pa.string())
    with fs.open(path, "rb") as fh:
        table = pq.read_table(fh, schema=ARROW_SCHEMA)
    changed = 0
    if supersede:
        keys = table.select(["uri", "labeled_at", "shard_id"]).to_pylist()
        keep = pa.array([not (r["uri"] in supersede and row_key(r) < supersede[r["uri"]]) for r in keys], pa.bool_())
        changed += table.num_rows - pc.sum(keep.cast(pa.int64())).as_py() if table.num_rows else 0
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
