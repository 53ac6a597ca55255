"""Answer a `SearchRequest` without OpenSearch or a search database: DuckDB over DEST/labels/*.parquet.

The fallback of the embedded search database (`search_db`, used when another process holds it or DEST
is read-only) and the baseline of bench/index_search.py: every search reads the label files. Same
semantics as the other backends:

    rows                one per uri (indexers.ledger's live-row rule), live ones only unless include_deleted
    person.* filters    all must hold for ONE person: len(list_filter(persons, lambda p: ...)) > 0
    --text, field~words every word (lowercased, split on non-word characters, English stop words
                        dropped) must start a word of the field: case-insensitive word-prefix match,
                        no stemming ("dress" finds "dresses", "dresses" does not find "dress")
    facets              counted per image (a photo with two smiling people counts once)
    pages               sorted by uri; the cursor is the last uri of the page

Every value a user typed is a bound parameter; column names come only from the
field catalogue (`indexers.fields`) and are checked and quoted. The files are
listed again on every search, so newly committed shards show up at once, and
read by DuckDB's Parquet reader (s3:// through DEST's fsspec filesystem,
registered with DuckDB; no extension is ever downloaded). Should a file not fit
(an older schema), the search runs again over a pyarrow dataset with today's
schema, where missing columns are nulls.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Optional

import pyarrow.dataset as ds

from humantag.indexers.documents import document_id, row_to_document
from humantag.indexers.fields import NESTED_PATH, FieldSpec, all_fields
from humantag.indexers.layout import OutputLayout
from humantag.indexers.search.search_db import MACROS
from humantag.indexers.search.model import (
    FacetBucket,
    Filter,
    Hit,
    QueryError,
    Scalar,
    SearchRequest,
    SearchResponse,
    SearchUnavailable,
    check_facets,
    decode_cursor,
    encode_cursor,
    not_produced,
    person_groups,
)
from humantag.workers.records import ARROW_SCHEMA
from humantag.workers.storage import StorageOptions, arrow_filesystem, filesystem, is_local

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOC_ID = re.compile(r"^[0-9a-f]{32}$")
_WORD = re.compile(r"\w+")
# The same split in SQL (RE2): runs of letters, digits and underscores are words.
_SQL_NON_WORD = r"'[^\pL\pN_]+'"

# Lucene's English stop words (what OpenSearch's `english` analyzer drops), so `--text "woman in red"`
# needs "woman" and "red" in both backends.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)


def text_words(text: str) -> list[str]:
    """The words a text search needs: lowercased, split on non-word characters, stop words dropped."""
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS))


def _ident(name: str) -> str:
    if not _IDENT.match(name):  # catalogue names only; never reached with user text
        raise ValueError(f"not a column name: {name!r}")
    return f'"{name}"'


def _column(path: str, row: str = "") -> str:
    """SQL for a path of the row (`"scene"."setting"`) or, with row="p", of a person (`p."eyewear"`)."""
    parts = [_ident(part) for part in path.split(".")]
    return ".".join([row, *parts] if row else parts)


def sort_buckets(buckets: list[FacetBucket], size: int) -> list[FacetBucket]:
    """Most images first, then by value; the first `size` (the OpenSearch backend orders the same way)."""
    return sorted(buckets, key=lambda b: (-b.count, str(type(b.value).__name__), b.value))[:size]


class _Sql:
    """Builds a WHERE clause; every user value becomes a `?` with its parameter appended in order."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def param(self, spec: FieldSpec, value: Scalar) -> str:
        self.params.append(value)
        return "CAST(? AS TIMESTAMPTZ)" if spec.kind == "date" else "?"

    def _any_of(self, spec: FieldSpec, expr: str, values: tuple[Scalar, ...]) -> str:
        marks = ", ".join(self.param(spec, v) for v in values)
        if spec.is_list:
            return f"coalesce(list_has_any({expr}, [{marks}]), false)"
        return f"coalesce({expr} IN ({marks}), false)"

    def words(self, expr: str, text: str) -> str:
        words = text_words(text)
        if not words:
            return "false"  # only stop words or punctuation: matches nothing (as OpenSearch's match does)
        conditions = []
        for word in words:
            self.params.append(word)
            conditions.append(
                f"coalesce(len(list_filter(string_split_regex(lower({expr}), {_SQL_NON_WORD}), "
                f"lambda w: starts_with(w, ?))) > 0, false)"
            )
        return "(" + " AND ".join(conditions) + ")"

    def condition(self, flt: Filter, expr: str) -> str:
        spec = flt.spec
        if flt.op == "~":
            return self.words(expr, str(flt.values[0]))
        if flt.op == "=":
            return self._any_of(spec, expr, flt.values)
        if flt.op == "!=":
            return f"NOT {self._any_of(spec, expr, flt.values)}"
        if flt.op not in (">=", "<=", ">", "<"):
            raise QueryError(f"unknown operator {flt.op!r}")
        return f"coalesce({expr} {flt.op} {self.param(spec, flt.values[0])}, false)"

    def where(self, request: SearchRequest) -> str:
        # Parameters are bound in the order conditions are built, which must be their order in the SQL:
        # top-level conditions first, then the person conditions, then the text.
        conditions = [self.condition(f, _column(f.spec.path)) for f in request.filters if not f.spec.nested]
        for group in person_groups(request.filters).values():
            person_conditions = [self.condition(f, _column(f.spec.column, row="p")) for f in group]
            conditions.append(
                f"coalesce(len(list_filter({_column(NESTED_PATH)}, lambda p: {' AND '.join(person_conditions)})) > 0, false)"
            )
        if request.text:
            conditions.append(self.words(_column("caption"), request.text))
        return " AND ".join(conditions) if conditions else "true"


_DERIVED = "ht_bucket(uri) AS bucket, ht_prefix(uri) AS prefix"


def _base(include_deleted: bool) -> str:
    """The rows searched, one per uri (indexers.ledger's live-row rule): live ones, or current ones with deleted."""
    from humantag.indexers.ledger import current_rows_sql, live_rows_sql

    return (current_rows_sql if include_deleted else live_rows_sql)("labels", f"*, {_DERIVED}")


def _facet_values(spec: FieldSpec) -> str:
    """SQL for the distinct non-null values of a field in one row of `m`, as a list."""
    if spec.nested:
        person_value = _column(spec.column, row="p")
        values = f"list_transform(m.{_column(NESTED_PATH)}, lambda p: {person_value})"
        if spec.is_list:
            values = f"flatten(list_transform({values}, lambda x: coalesce(x, [])))"
        return f"list_distinct({values})"
    if spec.is_list:
        return f"list_distinct(m.{_column(spec.path)})"
    return ""


def _facet_value(spec: FieldSpec, text: str) -> Scalar:
    if spec.kind == "bool":
        return text.lower() == "true"
    if spec.kind == "int":
        return int(text)
    if spec.kind == "float":
        return float(text)
    return text


class ParquetSearchBackend:
    """SearchBackend over the label files of one DEST (folder, file:// or s3://). Safe to share between threads."""

    def __init__(self, dest: str, storage: Optional[StorageOptions] = None) -> None:
        import duckdb

        self.dest = dest
        self.fs, root = filesystem(dest, storage)
        self.layout = OutputLayout(root)
        self._local = is_local(self.fs)
        # Never download extensions: remote files are read through our fsspec filesystem.
        self._db = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                      "autoload_known_extensions": False})
        for macro in MACROS:
            self._db.execute(macro)
        if not self._local:
            self._db.register_filesystem(self.fs)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"Parquet labels under {self.dest} (DuckDB)"

    def check(self) -> None:
        """SearchUnavailable when DEST does not exist or cannot be read."""
        try:
            exists = self.fs.exists(self.layout.root)
        except Exception as exc:  # noqa: BLE001 - storage errors become one line
            raise SearchUnavailable(f"cannot read {self.dest}: {type(exc).__name__}: {str(exc)[:200]}") from None
        if not exists:
            raise SearchUnavailable(f"{self.dest}: no such folder or prefix (expected the --out of a run, with labels/ in it)")
        if not self.fs.exists(self.layout.labels_dir):
            raise SearchUnavailable(f"{self.dest}: no labels/ in it: give the --out of a run (not its source), or run first")

    # --- reading -------------------------------------------------------------------------------

    def _files(self) -> list[str]:
        from humantag.indexers.ledger import label_files

        try:
            self.fs.invalidate_cache(self.layout.labels_dir)  # s3fs caches listings: see shards committed since
            return label_files(self.fs, self.layout)
        except Exception as exc:  # noqa: BLE001
            raise SearchUnavailable(f"cannot list {self.dest}/labels: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _cursor(self, files: list[str], native: bool) -> Any:
        """A DuckDB cursor (its own connection: one per search, so threads never share one) where
        `labels` is every label file: DuckDB's own Parquet reader (`native`, several times faster), or a
        pyarrow dataset with the current schema (columns an older file lacks read as null)."""
        with self._lock:
            cursor = self._db.cursor()
        try:
            cursor.execute("SET TimeZone = 'UTC'")
            if native:
                urls = files if self._local else [self.fs.unstrip_protocol(f) for f in files]
                listing = ", ".join("'" + url.replace("'", "''") + "'" for url in urls)
                # The first file's columns; a file that disagrees (an older schema) fails the query, which
                # `_query` then runs again through pyarrow with the current schema.
                cursor.execute(f"CREATE TEMP VIEW labels AS SELECT * FROM read_parquet([{listing}])")
            else:
                dataset = ds.dataset(files, filesystem=arrow_filesystem(self.fs), format="parquet", schema=ARROW_SCHEMA)
                cursor.register("labels", dataset)
        except BaseException:
            cursor.close()
            raise
        return cursor

    def _query(self, files: list[str], work: Any) -> Any:
        """work(cursor) over the label files: natively, else (older files, odd names) through pyarrow."""
        import duckdb

        if not any(ch in f for f in files for ch in "*?[{"):  # DuckDB would expand these as globs
            cursor = None
            try:
                cursor = self._cursor(files, native=True)
                return work(cursor)
            except duckdb.Error as exc:
                log.debug("DuckDB's Parquet reader failed (%s); reading through pyarrow", exc)
            finally:
                if cursor is not None:
                    cursor.close()
        cursor = self._cursor(files, native=False)
        try:
            return work(cursor)
        except (duckdb.IOException, duckdb.HTTPException, duckdb.InvalidInputException, OSError) as exc:
            message = " ".join(str(exc).split())
            raise SearchUnavailable(f"cannot read the labels under {self.dest}: {message[:300]}") from None
        finally:
            cursor.close()

    @staticmethod
    def _run(cursor: Any, sql: str, params: list[Any], rows: bool = False) -> Any:
        """fetchall() of the query, or its rows as dicts (`rows`)."""
        relation = cursor.sql(sql, params=params)
        return relation.to_arrow_table().to_pylist() if rows else relation.fetchall()

    # --- SearchBackend -------------------------------------------------------------------------

    def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        facet_names = check_facets(list(request.facets))
        after = self._after(request)
        files = self._files()
        if not files:
            return SearchResponse(total=0, hits=[], facets={name: [] for name in facet_names},
                                  took_ms=(time.perf_counter() - started) * 1000)
        sql = _Sql()
        where = sql.where(request)
        base = _base(request.include_deleted)

        def work(cursor: Any) -> tuple[Any, ...]:
            hits, more = self._page(cursor, base, where, sql.params, request, after)
            total, facets = self._counts(cursor, base, where, sql.params, request, facet_names)
            return hits, more, total, facets

        hits, more, total, facets = self._query(files, work)
        response = SearchResponse(
            total=total,
            hits=hits,
            facets=facets,
            next_cursor=encode_cursor([hits[-1].uri]) if more and hits else None,
        )
        if total == 0:
            response.not_produced = not_produced(request, self)
        response.took_ms = (time.perf_counter() - started) * 1000
        return response

    def filled(self, spec: FieldSpec) -> bool:
        """Any row (live or deleted) has a value in this field (a person field: any person)."""
        files = self._files()
        if not files:
            return False
        if spec.nested:
            value = _column(spec.column, row="p")
            present = f"len({value}) > 0" if spec.is_list else f"{value} IS NOT NULL"
            condition = f"len(list_filter({_column(NESTED_PATH)}, lambda p: {present})) > 0"
        else:
            condition = f"{_column(spec.path)} IS NOT NULL"
        sql = f"SELECT 1 FROM labels WHERE {condition} LIMIT 1"
        return bool(self._query(files, lambda cursor: self._run(cursor, sql, [])))

    def labelers(self) -> list[str]:
        files = self._files()
        sql = ("SELECT labeler FROM labels GROUP BY labeler ORDER BY count(*) FILTER (WHERE status = 'ok') DESC, "
               "count(*) DESC, labeler")
        return [r[0] for r in self._query(files, lambda cursor: self._run(cursor, sql, []))] if files else []

    @staticmethod
    def _after(request: SearchRequest) -> Optional[str]:
        if not request.after:
            return None
        values = decode_cursor(request.after)
        if len(values) != 1 or not isinstance(values[0], str):
            raise QueryError("invalid cursor: pass back next_cursor from the previous page of the same search")
        return values[0]

    def _page(self, cursor: Any, base: str, where: str, params: list[Any], request: SearchRequest,
              after: Optional[str]) -> tuple[list[Hit], bool]:
        if request.size == 0:
            return [], False
        page_params = list(params)
        condition = where
        if after is not None:
            condition = f"({where}) AND uri > ?"
            page_params.append(after)
        page_params.append(request.size + 1)  # one more than asked: tells whether another page exists
        sql = f"WITH base AS ({base}) SELECT * EXCLUDE (bucket, prefix) FROM base WHERE {condition} ORDER BY uri LIMIT ?"
        rows = self._run(cursor, sql, page_params, rows=True)
        more = len(rows) > request.size
        hits = []
        for row in rows[: request.size]:
            hits.append(Hit(id=document_id(row["uri"]), uri=row["uri"], score=None, document=row_to_document(row)))
        return hits, more

    def _counts(self, cursor: Any, base: str, where: str, params: list[Any], request: SearchRequest,
                facet_names: list[str]) -> tuple[int, dict[str, list[FacetBucket]]]:
        specs = [all_fields()[name] for name in facet_names]
        columns = ["uri", *dict.fromkeys(_ident(spec.path.split(".")[0]) for spec in specs)]
        arms = ["SELECT -1 AS f, NULL AS v, count(*) AS n FROM m"]
        for i, spec in enumerate(specs):
            values = _facet_values(spec)
            if values:
                arms.append(
                    f"SELECT {i} AS f, CAST(v AS VARCHAR) AS v, count(*) AS n "
                    f"FROM (SELECT unnest({values}) AS v FROM m) WHERE v IS NOT NULL GROUP BY 2"
                )
            else:
                value = f"m.{_column(spec.path)}"
                arms.append(f"SELECT {i} AS f, CAST({value} AS VARCHAR) AS v, count(*) AS n FROM m WHERE {value} IS NOT NULL GROUP BY 2")
        sql = (
            f"WITH base AS ({base}), m AS MATERIALIZED (SELECT {', '.join(columns)} FROM base WHERE {where}) "
            + " UNION ALL ".join(arms)
        )
        total = 0
        found: dict[int, list[FacetBucket]] = {i: [] for i in range(len(specs))}
        for f, value, n in self._run(cursor, sql, list(params)):
            if f < 0:
                total = int(n)
            else:
                found[f].append(FacetBucket(value=_facet_value(specs[f], value), count=int(n)))
        facets = {spec.name: sort_buckets(found[i], request.facet_size) for i, spec in enumerate(specs)}
        return total, facets

    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        if not _DOC_ID.match(doc_id or ""):
            return None
        files = self._files()
        if not files:
            return None
        sql = (f"WITH base AS ({_base(False)}) SELECT * EXCLUDE (bucket, prefix) FROM base "
               "WHERE substr(sha256(uri), 1, 32) = ? LIMIT 1")
        rows = self._query(files, lambda cursor: self._run(cursor, sql, [doc_id], rows=True))
        return row_to_document(rows[0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
