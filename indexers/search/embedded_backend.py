"""Answer a `SearchRequest` from the embedded search database (`search_db.SearchDatabase`): no OpenSearch.

Same semantics as the other engines (see parquet_backend's notes on words and facets), over tables
instead of files:

    rows searched       `images` (one row per uri, the live-row rule), deleted ones only on request
    person.* filters    per person group: img IN (SELECT img FROM persons p WHERE <all of its filters>);
                        a group of one `=` filter tests the image's bit mask of that field instead
    caption words       every word must start a word of the caption: a range of the sorted `words`
    facets              image counts: top-level fields grouped over the matching images, person fields
                        counted from the images' bit masks (`search_db.PersonMask`) in the same scan
    pages               sorted by uri; the cursor is the last uri of the page; the ids of a page are
                        found first, then their rows fetched through the index on img

Values are bound parameters; column names come from the field catalogue only.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from humantag.indexers.documents import row_to_document
from humantag.indexers.fields import FieldSpec, all_fields
from humantag.indexers.search.model import (
    FacetBucket,
    Hit,
    QueryError,
    SearchRequest,
    SearchResponse,
    SearchUnavailable,
    check_facets,
    decode_cursor,
    encode_cursor,
    not_produced,
    person_groups,
)
from humantag.indexers.search.parquet_backend import _column, _facet_value, _Sql, sort_buckets, text_words
from humantag.indexers.search.search_db import SearchDatabase, derived_columns, person_masks

log = logging.getLogger(__name__)

_CAPTION = _column("caption")
_MAX_CHAR = "\U0010FFFF"  # after every word that starts with a given prefix


class _TableSql(_Sql):
    """WHERE over `images`, person groups as semi-joins on `persons`."""

    def words(self, expr: str, text: str) -> str:
        if expr != _CAPTION:
            return super().words(expr, text)
        words = text_words(text)
        if not words:
            return "false"
        conditions = []
        for word in words:
            self.params += [word, word + _MAX_CHAR]
            conditions.append("img IN (SELECT img FROM words WHERE word >= ? AND word < ?)")
        return "(" + " AND ".join(conditions) + ")"

    def where(self, request: SearchRequest) -> str:
        conditions = [self.condition(f, _column(f.spec.path)) for f in request.filters if not f.spec.nested]
        masks = person_masks()
        for group in person_groups(request.filters).values():
            (first, *rest) = group
            if not rest and first.op == "=" and first.field in masks:
                mask = masks[first.field]
                conditions.append(f"({mask.column} & {mask.bits(first.values)}::UBIGINT) <> 0")
                continue
            person = [self.condition(f, _column(f.spec.column, row="p")) for f in group]
            conditions.append(f"img IN (SELECT p.img FROM persons p WHERE {' AND '.join(person)})")
        if request.text:
            conditions.append(self.words(_CAPTION, request.text))
        if not request.include_deleted:
            conditions.append("deleted_at IS NULL")
        return " AND ".join(conditions) if conditions else "true"


class EmbeddedSearchBackend:
    """SearchBackend over a `SearchDatabase`, refreshed before each search. Safe to share between threads."""

    def __init__(self, database: SearchDatabase) -> None:
        self.db = database

    def describe(self) -> str:
        return f"labels under {self.db.dest} (embedded DuckDB search database)"

    def _refresh(self) -> None:
        try:
            self.db.refresh()
        except Exception as exc:  # noqa: BLE001 - storage/file errors become one line
            message = " ".join(str(exc).split())
            raise SearchUnavailable(f"cannot read the labels under {self.db.dest}: {type(exc).__name__}: {message[:300]}") from None

    def _run(self, sql: str, params: list[Any], rows: bool = False) -> Any:
        cursor = self.db.cursor()
        try:
            return self._on(cursor, sql, params, rows)
        finally:
            cursor.close()

    @staticmethod
    def _on(cursor: Any, sql: str, params: list[Any], rows: bool = False) -> Any:
        relation = cursor.sql(sql, params=params)
        return relation.to_arrow_table().to_pylist() if rows else relation.fetchall()

    def _documents(self, cursor: Any, ids: list[int]) -> list[dict[str, Any]]:
        """The Parquet columns of these images, in this order (ids are integers from the database)."""
        if not ids:
            return []
        hidden = ", ".join(c for c in derived_columns() if c != "img")
        found = self._on(cursor, f"SELECT * EXCLUDE ({hidden}) FROM images WHERE img IN ({', '.join(str(int(i)) for i in ids)})",
                         [], rows=True)
        by_id = {row.pop("img"): row for row in found}
        return [by_id[i] for i in ids if i in by_id]

    def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        facet_names = check_facets(list(request.facets))
        after = _after(request)
        self._refresh()
        hits, more = self._page(request, after)
        total, facets = self._counts(request, facet_names)
        response = SearchResponse(
            total=total, hits=hits, facets=facets,
            next_cursor=encode_cursor([hits[-1].uri]) if more and hits else None,
        )
        if total == 0:
            response.not_produced = not_produced(request, self)
        response.took_ms = (time.perf_counter() - started) * 1000
        return response

    def _page(self, request: SearchRequest, after: Optional[str]) -> tuple[list[Hit], bool]:
        if request.size == 0:
            return [], False
        sql = _TableSql()
        condition = sql.where(request)
        if after is not None:
            condition += " AND uri > ?"
            sql.params.append(after)
        sql.params.append(request.size + 1)  # one more than asked: tells whether another page exists
        cursor = self.db.cursor()
        try:
            ids = [r[0] for r in self._on(cursor, f"SELECT img FROM images WHERE {condition} ORDER BY uri LIMIT ?", sql.params)]
            rows = self._documents(cursor, ids[: request.size])
        finally:
            cursor.close()
        hits = [Hit(id=_doc_id(row["uri"]), uri=row["uri"], score=None, document=row_to_document(row)) for row in rows]
        return hits, len(ids) > request.size

    def _counts(self, request: SearchRequest, facet_names: list[str]) -> tuple[int, dict[str, list[FacetBucket]]]:
        """The total and the facets in one query over the matching images. A masked person facet is
        grouped by mask (few distinct values), then each mask's bits are counted here."""
        specs = [all_fields()[name] for name in facet_names]
        masks = person_masks()
        sql = _TableSql()
        where = sql.where(request)
        columns = ["img"]
        arms = ["SELECT -1 AS f, NULL AS v, count(*) AS n FROM m"]
        for i, spec in enumerate(specs):
            if spec.name in masks:
                columns.append(f"{masks[spec.name].column} AS c{i}")
                arms.append(f"SELECT {i} AS f, CAST(c{i} AS VARCHAR) AS v, count(*) AS n FROM m WHERE c{i} <> 0 GROUP BY 2")
            elif spec.nested:  # a person facet without a mask: distinct (image, value) pairs
                value = "unnest(p.c)" if spec.is_list else "p.c"
                arms.append(
                    f"SELECT {i} AS f, CAST(v AS VARCHAR) AS v, count(*) AS n FROM (SELECT DISTINCT p.img, {value} AS v "
                    f"FROM (SELECT img, {_column(spec.column)} AS c FROM persons) p SEMI JOIN m ON p.img = m.img) "
                    "WHERE v IS NOT NULL GROUP BY 2"
                )
            else:
                columns.append(f"{_column(spec.path)} AS c{i}")
                source = f"(SELECT DISTINCT img, unnest(c{i}) AS v FROM m)" if spec.is_list else f"(SELECT c{i} AS v FROM m)"
                arms.append(f"SELECT {i} AS f, CAST(v AS VARCHAR) AS v, count(*) AS n FROM {source} WHERE v IS NOT NULL GROUP BY 2")
        query = f"WITH m AS MATERIALIZED (SELECT {', '.join(columns)} FROM images WHERE {where}) " + " UNION ALL ".join(arms)
        total = 0
        found: dict[int, dict[Any, int]] = {i: {} for i in range(len(specs))}
        for f, value, n in self._run(query, sql.params):
            if f < 0:
                total = int(n)
                continue
            spec = specs[f]
            if spec.name in masks:
                bits = int(value)
                for k, mask_value in enumerate(masks[spec.name].values):
                    if bits >> k & 1:
                        found[f][mask_value] = found[f].get(mask_value, 0) + int(n)
            else:
                found[f][_facet_value(spec, value)] = int(n)
        facets = {
            spec.name: sort_buckets([FacetBucket(value=v, count=n) for v, n in found[i].items()], request.facet_size)
            for i, spec in enumerate(specs)
        }
        return total, facets

    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        if not isinstance(doc_id, str) or len(doc_id) != 32 or any(c not in "0123456789abcdef" for c in doc_id):
            return None
        self._refresh()
        cursor = self.db.cursor()
        try:
            ids = self._on(cursor, "SELECT img FROM images WHERE doc_id = ? AND deleted_at IS NULL LIMIT 1", [doc_id])
            rows = self._documents(cursor, [ids[0][0]] if ids else [])
        finally:
            cursor.close()
        return row_to_document(rows[0]) if rows else None

    # --- what the rows hold (for honest empty results) -------------------------------------------

    def filled(self, spec: FieldSpec) -> bool:
        """True when any image (its newest row, live or deleted) has a value in this field."""
        if spec.nested:
            column = _column(spec.column, row="p")
            present = f"len({column}) > 0" if spec.is_list else f"{column} IS NOT NULL"
            sql = f"SELECT 1 FROM persons p WHERE {present} LIMIT 1"
        else:
            column = _column(spec.path)
            sql = f"SELECT 1 FROM images WHERE {column} IS NOT NULL LIMIT 1"
        return bool(self._run(sql, []))

    def labelers(self) -> list[str]:
        """The labelers that made the rows, most rows first (ok rows; all rows when none is ok)."""
        rows = self._run("SELECT labeler FROM images GROUP BY labeler ORDER BY count(*) FILTER (WHERE status = 'ok') DESC, "
                         "count(*) DESC, labeler", [])
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()


def _doc_id(uri: str) -> str:
    from humantag.indexers.documents import document_id

    return document_id(uri)


def _after(request: SearchRequest) -> Optional[str]:
    if not request.after:
        return None
    values = decode_cursor(request.after)
    if len(values) != 1 or not isinstance(values[0], str):
        raise QueryError("invalid cursor: pass back next_cursor from the previous page of the same search")
    return values[0]
