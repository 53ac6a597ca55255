"""Plan a run as the difference between the source listing and the ledger.

The listing is spooled to a local Parquet file as it streams, then DuckDB joins
it with the ledger (the bookkeeping columns of DEST/labels) out of core, so
memory stays bounded for millions of objects:

  new       listed, never labeled, or labeled only before it was deleted from the source
            (re-added: the new row supersedes the tombstoned one)
  changed   listed with another etag / mtime / size than the labeled version
  stale     unchanged, but labeled under an identity (labeler, prompt, schema version) the
            labeler no longer has (--relabel-stale)
  retry     last attempt failed with a retryable error kind (workers.records.RETRYABLE_ERROR_KINDS)
  deleted   labeled and live in the ledger, no longer listed (under the same source prefix)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from humantag.flows.listing import SourceSpec
from humantag.flows.plan import LISTING_SCHEMA, PlanCounts, PlannedObject, RunPlan, build_plan, write_plan
from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import current_rows_sql, ledger_dataset, live_rows_sql
from humantag.workers.loader import SourceObject
from humantag.workers.labelers.base import LabelerIdentity
from humantag.workers.records import RETRYABLE_ERROR_KINDS
from humantag.workers.storage import filesystem, protocol_of

log = logging.getLogger(__name__)

DELETED_SCHEMA = pa.schema([pa.field("uri", pa.string()), pa.field("shard_id", pa.string())])
CURRENT_SCHEMA = pa.schema([pa.field(name, pa.string()) for name in ("labeler_version", "prompt_version", "schema_version")])


@dataclass(frozen=True)
class CurrentVersions:
    """The identities a current row may carry (a composite labeler has several)."""

    identities: tuple[LabelerIdentity, ...]

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(
            [{"labeler_version": i.version, "prompt_version": i.prompt_version, "schema_version": i.schema_version}
             for i in self.identities],
            schema=CURRENT_SCHEMA,
        )


def source_uri_prefix(url: str) -> str:
    """The URI every listed object of `url` starts with (as the listing writes uris)."""
    fs, root = filesystem(url)
    if protocol_of(url) == "file":
        return f"file://{root.rstrip('/')}/"
    return fs.unstrip_protocol(root).rstrip("/") + "/"


def _spool_listing(objects: Iterable[SourceObject], path: str, batch: int = 10_000) -> int:
    count = 0
    schema = LISTING_SCHEMA.append(pa.field("seq", pa.int64()))
    with pq.ParquetWriter(path, schema) as writer:
        rows: list[SourceObject] = []

        def flush() -> None:
            writer.write_table(
                pa.table(
                    {
                        "uri": [o.uri for o in rows],
                        "size_bytes": [o.size_bytes for o in rows],
                        "etag": [o.etag for o in rows],
                        "mtime": [o.mtime for o in rows],
                        "seq": list(range(count - len(rows), count)),
                    },
                    schema=schema,
                )
            )
            rows.clear()

        for obj in objects:
            rows.append(obj)
            count += 1
            if len(rows) >= batch:
                flush()
        if rows:
            flush()
    return count


# Each listed uri is planned against its current row (indexers.ledger.LIVE_ROW_ORDER; a tombstone
# is seen too: a re-added object is new), and `old_shards` names every label file holding a row of
# it, so the new row's commit drops them all (a duplicate left by two concurrent runs included).
_LEDGER_CTE = """
ledger_one as (
    select uri, etag, size_bytes, epoch_us(mtime) / 1e6 as mtime_s, status, error_kind,
           labeler_version, prompt_version, schema_version, deleted_at is not null as is_deleted
    from ({current})
),
holders as (
    select uri, string_agg(distinct shard_id, ' ' order by shard_id) as old_shards
    from ledger where uri in (select uri from listing) group by uri
)
"""

_DIFF_SQL = """
with {ledger_cte},
joined as (
    select l.uri, l.size_bytes, l.etag, l.mtime, l.seq, h.old_shards,
        case
            when g.uri is null or g.is_deleted then 'new'
            when g.size_bytes is distinct from l.size_bytes
                 or (g.etag is not null and l.etag is not null and g.etag <> l.etag)
                 or (g.mtime_s is not null and l.mtime is not null and abs(g.mtime_s - l.mtime) > 0.001) then 'changed'
            when g.status = 'error' and g.error_kind in ({retryable}) then 'retry'
            -- A row without a prompt version never reached the prompt (e.g. the image did not decode).
            when $relabel_stale and not exists (
                 select 1 from current_identities c
                 where c.labeler_version = g.labeler_version and c.schema_version = g.schema_version
                   and (g.prompt_version is null or g.prompt_version is not distinct from c.prompt_version)) then 'stale'
            else 'unchanged'
        end as reason
    from listing l left join ledger_one g using (uri) left join holders h using (uri)
)
select uri, size_bytes, etag, mtime, reason, old_shards from joined order by seq
"""

# A full plan labels everything listed; the ledger only says which older rows each commit replaces.
_FULL_SQL = """
with {ledger_cte}
select l.uri, l.size_bytes, l.etag, l.mtime, 'listed' as reason, h.old_shards
from listing l left join holders h using (uri) order by seq
"""

_DELETED_SQL = """
select g.uri, g.shard_id from ({live}) g
where starts_with(g.uri, $prefix)
  and not exists (select 1 from listing l where l.uri = g.uri)
order by g.uri
"""


def _ledger_cte() -> str:
    scoped = "(select * from ledger where uri in (select uri from listing))"
    return _LEDGER_CTE.format(current=current_rows_sql(scoped)).strip()


@contextlib.contextmanager
def _listing_and_ledger(objects: Iterable[SourceObject], ledger: ds.Dataset) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """A DuckDB connection with `listing` (spooled to a local file as it streams) and `ledger`."""
    with tempfile.TemporaryDirectory(prefix="humantag-plan-") as tmp:
        listing_path = os.path.join(tmp, "listing.parquet")
        listed = _spool_listing(objects, listing_path)
        con = duckdb.connect()
        try:
            con.execute("set preserve_insertion_order = false")
            con.execute("SET TimeZone = 'UTC'")
            con.register("listing", ds.dataset(listing_path, format="parquet"))
            con.register("ledger", ledger)
            yield con, listed
        finally:
            con.close()


def build_incremental_plan(
    objects: Iterable[SourceObject],
    spec: SourceSpec,
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    run_id: str,
    shard_size: int,
    current: CurrentVersions,
    relabel_stale: bool,
    track_deletions: bool,
    ledger_at: Optional[tuple[fsspec.AbstractFileSystem, OutputLayout]] = None,
    listing: Optional[ListingReport] = None,
) -> RunPlan:
    """Plan into (fs, layout); the ledger is read there too unless `ledger_at` names another DEST (dry runs)."""
    counts = PlanCounts()
    ledger = ledger_dataset(*(ledger_at or (fs, layout)))
    if ledger is None:
        from humantag.workers.records import ARROW_SCHEMA

        ledger = ds.dataset(ARROW_SCHEMA.empty_table())
    with _listing_and_ledger(objects, ledger) as (con, listed):
        counts.listed = listed
        con.register("current_identities", current.table())
        params = {"relabel_stale": relabel_stale}
        retryable = ", ".join(f"'{kind}'" for kind in sorted(k.value for k in RETRYABLE_ERROR_KINDS))
        if track_deletions:  # before the plan file, which marks planning as finished
            counts.deleted = _write_deleted(con, spec, fs, layout, run_id)
        sql = _DIFF_SQL.format(ledger_cte=_ledger_cte(), retryable=retryable)
        reader = con.sql(sql, params=params).to_arrow_reader(10_000)

        def planned() -> Iterator[PlannedObject]:
            for batch in reader:
                for row in batch.to_pylist():
                    reason = row["reason"]
                    setattr(counts, reason, getattr(counts, reason) + 1)
                    if reason == "unchanged":
                        continue
                    obj = SourceObject(uri=row["uri"], size_bytes=row["size_bytes"], etag=row["etag"], mtime=row["mtime"])
                    yield obj, reason, row["old_shards"] or None

        # `counts` is filled while the manifest streams; write_plan records it at the end.
        plan = write_plan(planned(), fs, layout, run_id, spec.url, shard_size, mode="incremental", counts=counts,
                          listing=listing)
    log.info(
        "incremental plan %s: %d listed, %d new, %d changed, %d retried, %d stale, %d unchanged, %d deleted",
        run_id, counts.listed, counts.new, counts.changed, counts.retry, counts.stale, counts.unchanged, counts.deleted,
    )
    return plan


def build_full_plan(
    objects: Iterable[SourceObject],
    spec: SourceSpec,
    fs: fsspec.AbstractFileSystem,
    layout: OutputLayout,
    run_id: str,
    shard_size: int,
    ledger_at: Optional[tuple[fsspec.AbstractFileSystem, OutputLayout]] = None,
    listing: Optional[ListingReport] = None,
) -> RunPlan:
    """Every listed object; where DEST already has rows of an object, its commit replaces them."""
    ledger = ledger_dataset(*(ledger_at or (fs, layout)))
    if ledger is None:  # a first run: nothing to replace, no join
        return build_plan(objects, fs, layout, run_id, spec.url, shard_size, listing=listing)
    with _listing_and_ledger(objects, ledger) as (con, _):
        reader = con.sql(_FULL_SQL.format(ledger_cte=_ledger_cte())).to_arrow_reader(10_000)

        def planned() -> Iterator[PlannedObject]:
            for batch in reader:
                for row in batch.to_pylist():
                    obj = SourceObject(uri=row["uri"], size_bytes=row["size_bytes"], etag=row["etag"], mtime=row["mtime"])
                    yield obj, "listed", row["old_shards"] or None

        return write_plan(planned(), fs, layout, run_id, spec.url, shard_size, mode="full", listing=listing)


def deleted_file(layout: OutputLayout, run_id: str) -> str:
    return f"{layout.run_dir(run_id)}/deleted.parquet"


def _write_deleted(con: duckdb.DuckDBPyConnection, spec: SourceSpec, fs: fsspec.AbstractFileSystem,
                   layout: OutputLayout, run_id: str) -> int:
    prefix = source_uri_prefix(spec.url)
    fs.makedirs(layout.run_dir(run_id), exist_ok=True)
    reader = con.sql(_DELETED_SQL.format(live=live_rows_sql("ledger", "uri, shard_id")), params={"prefix": prefix}).to_arrow_reader(10_000)
    count = 0
    with fs.open(deleted_file(layout, run_id), "wb") as fh, pq.ParquetWriter(fh, DELETED_SCHEMA) as writer:
        for batch in reader:
            rows = [r for r in batch.to_pylist() if spec.accepts(r["uri"][len(prefix):])]
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=DELETED_SCHEMA))
                count += len(rows)
    return count


def read_deleted(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str) -> dict[str, list[str]]:
    """shard id -> uris deleted from the source whose rows live in that shard."""
    path = deleted_file(layout, run_id)
    if not fs.exists(path):
        return {}
    with fs.open(path, "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    by_shard: dict[str, list[str]] = {}
    for row in rows:
        by_shard.setdefault(row["shard_id"], []).append(row["uri"])
    return by_shard
