"""The embedded search database: DEST/labels copied once into DuckDB tables, kept current by file versions.

    DEST/_search/search-v<FORMAT>.duckdb    (a local DEST; for an s3:// DEST the tables live in memory)

    files     path, version              the label files the tables hold, with the version they were read at
    rows      every row of every file    (the Parquet columns + `_file`)
    images    one row per uri            the current row (indexers.ledger.current_rows_sql) of `rows`, with derived columns: img (id), doc_id,
                                         bucket, prefix, and per enumerated person field a bit mask of the
                                         values its persons have (`pm_<field>`: facet counts in one scan)
    persons   one row per person         `images.persons` flattened: img + every person column
    words     (img, word)                the caption's words, for word-prefix matching by range

Before every search `refresh()` lists DEST/labels (one listing, no reads) and compares each file's
version (S3 ETag, or size + mtime) with `files`: only new, rewritten (superseded rows, marked deletions)
or removed files are read, and only the images of the uris they hold are recomputed, in one transaction;
searches running meanwhile see the previous state. Nothing hooks the shard commit: a search after a
commit sees it. A DEST whose database is held by another process (a `serve` running) cannot open it:
`SearchDatabaseBusy`, and the caller falls back to scanning the Parquet files.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import fsspec
import pyarrow as pa
import pyarrow.dataset as ds

from humantag.indexers.fields import NESTED_PATH, FieldSpec, all_fields
from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import current_rows_sql
from humantag.indexers.search.model import Scalar
from humantag.workers.records import ARROW_SCHEMA
from humantag.workers.storage import arrow_filesystem, is_local

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the tables below change: an older file is rebuilt
SEARCH_DIR = "_search"
READ_BATCH_FILES = 256  # label files read per Arrow scan while (re)building


class SearchDatabaseBusy(RuntimeError):
    """The database file cannot be opened: another process holds it (DuckDB allows one writer
    process), or it cannot be written here."""


def _schema_fingerprint() -> str:
    """Changes with the record schema or the derived columns: the tables are then rebuilt."""
    return hashlib.sha256(f"{FORMAT}:{ARROW_SCHEMA}:{[m.sql() for m in person_masks().values()]}".encode()).hexdigest()[:16]


def database_path(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> str:
    """DEST/_search/search-v<FORMAT>.duckdb for a local DEST; in memory (built per process) for a remote one."""
    if not is_local(fs):
        return ":memory:"
    return posixpath.join(layout.root, SEARCH_DIR, f"search-v{FORMAT}.duckdb")


# bucket / prefix of a document (indexers.documents.bucket_and_prefix) as SQL.
MACROS = (
    "CREATE OR REPLACE MACRO ht_protocol(u) AS CASE WHEN strpos(u, '://') > 2 THEN substr(u, 1, strpos(u, '://') - 1) "
    "WHEN starts_with(u, 'data:') THEN 'data' ELSE NULL END",
    "CREATE OR REPLACE MACRO ht_path(u) AS CASE WHEN strpos(u, '://') > 2 THEN substr(u, strpos(u, '://') + 3) "
    "WHEN starts_with(u, 'data:') THEN substr(u, 6) ELSE u END",
    "CREATE OR REPLACE MACRO ht_head(p) AS regexp_extract(p, '(?s)^(.*/)', 1)",
    "CREATE OR REPLACE MACRO ht_dirname(p) AS CASE WHEN ht_head(p) <> '' AND regexp_matches(ht_head(p), '[^/]') "
    "THEN rtrim(ht_head(p), '/') ELSE ht_head(p) END",
    "CREATE OR REPLACE MACRO ht_local(u) AS coalesce(ht_protocol(u) IN ('file', 'local'), true)",
    "CREATE OR REPLACE MACRO ht_folder(u) AS ht_dirname(ht_path(u))",
    "CREATE OR REPLACE MACRO ht_bucket(u) AS CASE WHEN ht_local(u) THEN '' ELSE split_part(ht_folder(u), '/', 1) END",
    "CREATE OR REPLACE MACRO ht_prefix(u) AS CASE WHEN ht_local(u) THEN ht_folder(u) WHEN strpos(ht_folder(u), '/') > 0 "
    "THEN substr(ht_folder(u), strpos(ht_folder(u), '/') + 1) ELSE '' END",
    # Words of a text, as the text search splits them: lowercased runs of letters, digits and underscores.
    "CREATE OR REPLACE MACRO ht_words(t) AS list_filter(string_split_regex(lower(coalesce(t, '')), '[^\\pL\\pN_]+'), lambda w: w <> '')",
)
MAX_MASK_VALUES = 63


@dataclass(frozen=True)
class PersonMask:
    """A bit per value of one person field: bit k set when some person of the image has values[k]."""

    spec: FieldSpec
    values: tuple[Scalar, ...]

    @property
    def column(self) -> str:
        return f"pm_{self.spec.column}"

    def bits(self, wanted: tuple[Scalar, ...]) -> int:
        return sum(1 << self.values.index(v) for v in wanted if v in self.values)

    def sql(self) -> str:
        """The bits of one `persons` row (bit_or over an image's persons gives the image's mask)."""
        column = f'"{self.spec.column}"'
        if self.spec.kind == "bool":
            return f"(CASE WHEN {column} THEN 1 WHEN NOT {column} THEN 2 ELSE 0 END)::UBIGINT"
        cases = " ".join(f"WHEN '{str(v).replace(chr(39), chr(39) * 2)}' THEN {1 << k}" for k, v in enumerate(self.values))
        if self.spec.is_list:
            return f"coalesce(list_aggregate(list_transform({column}, lambda v: (CASE v {cases} ELSE 0 END)::UBIGINT), 'bit_or'), 0)::UBIGINT"
        return f"(CASE {column} {cases} ELSE 0 END)::UBIGINT"


@lru_cache(maxsize=1)
def person_masks() -> dict[str, PersonMask]:
    """Field name → mask, for every facetable person field of the catalogue."""
    masks = {}
    for spec in all_fields().values():
        if spec.nested and spec.facetable:
            values: tuple[Scalar, ...] = (True, False) if spec.kind == "bool" else spec.values
            if 0 < len(values) <= MAX_MASK_VALUES:
                masks[spec.name] = PersonMask(spec, values)
    return masks


def derived_columns() -> tuple[str, ...]:
    """Columns of `images` that are not Parquet columns (never part of a document)."""
    return ("img", "doc_id", "bucket", "prefix", *(m.column for m in person_masks().values()))


class SearchDatabase:
    """The tables of one DEST in DuckDB; `refresh()` before reading. Safe to share between threads:
    each reader takes its own `cursor()`, refreshes are serialised."""

    def __init__(self, dest: str, fs: fsspec.AbstractFileSystem, layout: OutputLayout, path: Optional[str] = None) -> None:
        import duckdb

        self.dest = dest
        self.fs = fs
        self.layout = layout
        self.path = path or database_path(fs, layout)
        config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(self.path, config=config)
        except duckdb.IOException as exc:  # held by another process, or not writable here
            raise SearchDatabaseBusy(f"cannot open {self.path}: {str(exc).splitlines()[0][:200]}") from None
        self._refresh_lock = threading.Lock()
        self._setup(self._db)
        self._create_tables()

    @staticmethod
    def _setup(connection: Any) -> None:
        connection.execute("SET GLOBAL TimeZone = 'UTC'")  # every cursor: timestamps are UTC
        for macro in MACROS:  # stored in the database: every cursor has them
            connection.execute(macro)

    def cursor(self) -> Any:
        return self._db.cursor()

    def close(self) -> None:
        self._db.close()

    # --- tables ----------------------------------------------------------------------------------

    def _create_tables(self) -> None:
        db = self._db
        fingerprint = _schema_fingerprint()
        db.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if found and found[0] != fingerprint:
            log.info("search database %s: made for another schema, rebuilding", self.path)
            for table in ("files", "rows", "images", "persons", "words"):
                db.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            db.execute("DROP SEQUENCE IF EXISTS img_ids")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", [fingerprint])
        db.execute("CREATE TABLE IF NOT EXISTS files (path VARCHAR PRIMARY KEY, version VARCHAR)")
        db.execute("CREATE SEQUENCE IF NOT EXISTS img_ids")
        empty = ARROW_SCHEMA.empty_table()
        db.register("ht_empty", empty)
        db.execute("CREATE TABLE IF NOT EXISTS rows AS SELECT *, ''::VARCHAR AS _file FROM ht_empty")
        masks = "".join(f"0::UBIGINT AS {m.column}, " for m in person_masks().values())
        db.execute(
            "CREATE TABLE IF NOT EXISTS images AS SELECT 0::BIGINT AS img, ''::VARCHAR AS doc_id, "
            f"''::VARCHAR AS bucket, ''::VARCHAR AS prefix, {masks}* FROM ht_empty"
        )
        # Pages and documents are fetched by id: an index instead of a scan of the wide rows.
        db.execute("CREATE INDEX IF NOT EXISTS images_img ON images (img)")
        db.execute("CREATE INDEX IF NOT EXISTS images_doc_id ON images (doc_id)")
        db.execute("CREATE TABLE IF NOT EXISTS words (img BIGINT, word VARCHAR)")
        person_type = dict(zip(empty.schema.names, empty.schema.types))[NESTED_PATH].value_type
        db.register("ht_person", pa.table({"p": pa.array([], person_type)}))
        db.execute("CREATE TABLE IF NOT EXISTS persons AS SELECT 0::BIGINT AS img, unnest(p) FROM ht_person")
        db.unregister("ht_empty")
        db.unregister("ht_person")

    # --- refresh ---------------------------------------------------------------------------------

    def _sources(self) -> dict[str, str]:
        from humantag.indexers.opensearch.sync import label_sources

        self.fs.invalidate_cache(self.layout.labels_dir)  # s3fs caches listings: see shards committed since
        return {s.path: s.version for s in label_sources(self.fs, self.layout)}

    def refresh(self) -> bool:
        """Bring the tables up to date with DEST/labels; True when something changed."""
        current = self._sources()
        with self._refresh_lock:
            known = dict(self._db.execute("SELECT path, version FROM files").fetchall())
            changed = sorted(p for p, v in current.items() if known.get(p) != v)
            removed = sorted(p for p in known if p not in current)
            if not changed and not removed:
                return False
            log.info("search database: reading %d label file(s), dropping %d", len(changed), len(removed))
            cursor = self.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                self._apply(cursor, changed, removed, current)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
            return True

    def _read(self, paths: list[str]) -> pa.Table:
        """Rows of these label files with today's schema (columns an older file lacks are null) + `_file`."""
        dataset = ds.dataset(paths, filesystem=arrow_filesystem(self.fs), format="parquet", schema=ARROW_SCHEMA)
        tables = []
        for fragment in dataset.get_fragments():
            table = fragment.to_table(schema=ARROW_SCHEMA)
            tables.append(table.append_column("_file", pa.repeat(pa.scalar(fragment.path), table.num_rows)))
        return pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table().append_column("_file", pa.array([], pa.string()))

    def _apply(self, cursor: Any, changed: list[str], removed: list[str], current: dict[str, str]) -> None:
        cursor.execute("CREATE OR REPLACE TEMP TABLE ht_gone (path VARCHAR)")
        cursor.executemany("INSERT INTO ht_gone VALUES (?)", [[p] for p in changed + removed])
        cursor.execute("CREATE OR REPLACE TEMP TABLE ht_affected AS SELECT DISTINCT uri FROM rows WHERE _file IN (SELECT path FROM ht_gone)")
        cursor.execute("DELETE FROM rows WHERE _file IN (SELECT path FROM ht_gone)")
        for start in range(0, len(changed), READ_BATCH_FILES):
            batch = self._read(changed[start : start + READ_BATCH_FILES])
            cursor.register("ht_batch", batch)
            cursor.execute("INSERT INTO rows SELECT * FROM ht_batch")
            cursor.execute("INSERT INTO ht_affected SELECT DISTINCT uri FROM ht_batch")
            cursor.unregister("ht_batch")
        cursor.execute("CREATE OR REPLACE TEMP TABLE ht_uris AS SELECT DISTINCT uri FROM ht_affected")
        cursor.execute("CREATE OR REPLACE TEMP TABLE ht_old AS SELECT img FROM images WHERE uri IN (SELECT uri FROM ht_uris)")
        for table in ("persons", "words", "images"):
            cursor.execute(f"DELETE FROM {table} WHERE img IN (SELECT img FROM ht_old)")
        # The winners by key columns only, then their whole rows (a window over wide rows is slow).
        winners = current_rows_sql("(SELECT rowid AS rid, uri, labeled_at, shard_id FROM rows WHERE uri IN (SELECT uri FROM ht_uris))", "rid")
        cursor.execute(
            "CREATE OR REPLACE TEMP TABLE ht_new AS SELECT nextval('img_ids') AS img, substr(sha256(uri), 1, 32) AS doc_id, "
            f"ht_bucket(uri) AS bucket, ht_prefix(uri) AS prefix, * EXCLUDE (_file) FROM rows WHERE rowid IN ({winners})"
        )
        cursor.execute(f"INSERT INTO persons SELECT img, unnest(p) FROM (SELECT img, unnest({NESTED_PATH}) AS p FROM ht_new)")
        masks = person_masks().values()
        aggregates = ", ".join(f"bit_or({m.sql()}) AS {m.column}" for m in masks)
        cursor.execute(f"CREATE OR REPLACE TEMP TABLE ht_masks AS SELECT img, {aggregates} FROM persons "
                       "WHERE img IN (SELECT img FROM ht_new) GROUP BY img")
        mask_columns = "".join(f"coalesce(k.{m.column}, 0)::UBIGINT, " for m in masks)
        cursor.execute(f"INSERT INTO images SELECT n.img, n.doc_id, n.bucket, n.prefix, {mask_columns}"
                       "n.* EXCLUDE (img, doc_id, bucket, prefix) FROM ht_new n LEFT JOIN ht_masks k ON k.img = n.img")
        cursor.execute("INSERT INTO words SELECT DISTINCT img, unnest(ht_words(caption)) AS word FROM ht_new ORDER BY word")
        cursor.execute("DELETE FROM files WHERE path IN (SELECT path FROM ht_gone)")
        if changed:
            cursor.executemany("INSERT INTO files VALUES (?, ?)", [[p, current[p]] for p in changed])
        for table in ("ht_gone", "ht_affected", "ht_uris", "ht_old", "ht_new", "ht_masks"):
            cursor.execute(f"DROP TABLE {table}")


