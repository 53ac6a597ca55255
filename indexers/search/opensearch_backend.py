"""Answer a `SearchRequest` with OpenSearch: one bool query, facets as terms aggregations.

    top-level filters   term / terms / range in bool.filter; `!=` in bool.must_not
    person.* filters    ONE nested query on `persons`: a single person must match all of them
    --text, field~words match (operator "and") on the analysed text field, scored
    facets              terms aggregations; person facets nested + reverse_nested (counts are images)
    pages               search_after on a deterministic sort: uri, or _score then uri with text

User values only ever reach term/terms/range values and `match` query strings:
never query_string, simple_query_string, regexp, wildcard or scripts.
Searches read the alias `settings.index`; rows of deleted objects are removed
from the index by the indexer, so `include_deleted` cannot bring them back here.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from humantag.indexers.fields import NESTED_PATH, FieldSpec, all_fields
from humantag.indexers.opensearch.settings import OpenSearchSettings
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

log = logging.getLogger(__name__)

_INVALID_CURSOR = "invalid cursor: pass back next_cursor from the previous page of the same search"


def _is_text_query(request: SearchRequest) -> bool:
    """Scored (sorted by relevance) when words are searched: --text or any field~words."""
    return bool(request.text) or any(f.op == "~" for f in request.filters)


def _value_clause(spec: FieldSpec, values: tuple[Scalar, ...]) -> dict[str, Any]:
    if len(values) == 1:
        return {"term": {spec.path: values[0]}}
    return {"terms": {spec.path: list(values)}}


_RANGE = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


def _add_filter(clauses: dict[str, list[dict[str, Any]]], flt: Filter) -> None:
    spec = flt.spec
    if flt.op == "~":
        clauses["must"].append({"match": {spec.path: {"query": str(flt.values[0]), "operator": "and"}}})
    elif flt.op == "=":
        clauses["filter"].append(_value_clause(spec, flt.values))
    elif flt.op == "!=":
        clauses["must_not"].append(_value_clause(spec, flt.values))
    else:
        clauses["filter"].append({"range": {spec.path: {_RANGE[flt.op]: flt.values[0]}}})


def _bool(clauses: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    body = {k: v for k, v in clauses.items() if v}
    return {"bool": body} if body else {"match_all": {}}


def build_query(request: SearchRequest) -> dict[str, Any]:
    """The `query` part of the search body: one nested query per person (`person_groups`)."""
    top: dict[str, list[dict[str, Any]]] = {"filter": [], "must": [], "must_not": []}
    for flt in request.filters:
        if not flt.spec.nested:
            _add_filter(top, flt)
    if request.text:
        top["must"].append({"match": {"caption": {"query": request.text, "operator": "and"}}})
    for group in person_groups(request.filters).values():
        person: dict[str, list[dict[str, Any]]] = {"filter": [], "must": [], "must_not": []}
        for flt in group:
            _add_filter(person, flt)
        nested = {"nested": {"path": NESTED_PATH, "query": _bool(person), "score_mode": "max"}}
        top["must" if person["must"] else "filter"].append(nested)
    return _bool(top)


def _facet_size(spec: FieldSpec, facet_size: int) -> int:
    # Enumerations: ask for every value, so sorting by image count below sees all of them.
    return max(facet_size, len(spec.values) + 1, 2 if spec.kind == "bool" else 0)


def build_aggs(request: SearchRequest) -> dict[str, Any]:
    aggs: dict[str, Any] = {}
    for i, name in enumerate(check_facets(list(request.facets))):
        spec = all_fields()[name]
        terms = {"terms": {"field": spec.path, "size": _facet_size(spec, request.facet_size)}}
        if spec.nested:
            terms["aggs"] = {"images": {"reverse_nested": {}}}
            aggs[f"f{i}"] = {"nested": {"path": NESTED_PATH}, "aggs": {"values": terms}}
        else:
            aggs[f"f{i}"] = terms
    return aggs


def _sort(request: SearchRequest) -> list[dict[str, str]]:
    if _is_text_query(request):
        return [{"_score": "desc"}, {"uri": "asc"}]
    return [{"uri": "asc"}]


def _search_after(request: SearchRequest) -> Optional[list[Scalar]]:
    if not request.after:
        return None
    values = decode_cursor(request.after)
    if _is_text_query(request):
        ok = len(values) == 2 and isinstance(values[0], (int, float)) and not isinstance(values[0], bool) and isinstance(values[1], str)
    else:
        ok = len(values) == 1 and isinstance(values[0], str)
    if not ok:
        raise QueryError(_INVALID_CURSOR)
    return values


def build_body(request: SearchRequest) -> dict[str, Any]:
    """The whole search request body (public for debugging and tests)."""
    body: dict[str, Any] = {
        "query": build_query(request),
        "sort": _sort(request),
        # One more than asked: tells whether another page exists.
        "size": request.size + 1 if request.size else 0,
        "track_total_hits": True,
    }
    after = _search_after(request)
    if after is not None:
        body["search_after"] = after
    aggs = build_aggs(request)
    if aggs:
        body["aggs"] = aggs
    return body


def _bucket_value(spec: FieldSpec, bucket: dict[str, Any]) -> Scalar:
    key = bucket["key"]
    if spec.kind == "bool":
        return str(bucket.get("key_as_string", key)).lower() in ("true", "1")
    if spec.kind == "int":
        return int(key)
    if spec.kind == "float":
        return float(key)
    if spec.kind == "date":
        return str(bucket.get("key_as_string", key))
    return str(key)


def sort_buckets(buckets: list[FacetBucket], size: int) -> list[FacetBucket]:
    """Most images first, then by value; the first `size`. Both backends order facets this way."""
    return sorted(buckets, key=lambda b: (-b.count, str(type(b.value).__name__), b.value))[:size]


def parse_facets(request: SearchRequest, aggregations: dict[str, Any]) -> dict[str, list[FacetBucket]]:
    facets: dict[str, list[FacetBucket]] = {}
    for i, name in enumerate(request.facets):
        spec = all_fields()[name]
        agg = aggregations.get(f"f{i}", {})
        if spec.nested:
            raw = [(b, b["images"]["doc_count"]) for b in agg.get("values", {}).get("buckets", [])]
        else:
            raw = [(b, b["doc_count"]) for b in agg.get("buckets", [])]
        buckets = [FacetBucket(value=_bucket_value(spec, b), count=int(n)) for b, n in raw if n > 0]
        facets[name] = sort_buckets(buckets, request.facet_size)
    return facets


def _sort_key(values: list[Any]) -> tuple[Any, ...]:
    """Ascending order of a hit's sort values ([uri] or [score, uri]: higher scores first)."""
    if len(values) == 2:
        return (-float(values[0]), str(values[1]))
    return tuple(str(v) for v in values)


class OpenSearchSearchBackend:
    """SearchBackend over the read alias of an OpenSearch index."""

    def __init__(self, settings: OpenSearchSettings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = self.settings.client()
            except ValueError as exc:  # e.g. SigV4 without AWS credentials
                raise SearchUnavailable(f"OpenSearch at {self.settings.safe_urls()}: {exc}") from None
        return self._client

    def describe(self) -> str:
        return f"OpenSearch {self.settings.safe_urls()} index {self.settings.index}"

    def _call(self, fn: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        from opensearchpy.exceptions import ConnectionError as OSConnectionError
        from opensearchpy.exceptions import NotFoundError, TransportError

        try:
            return fn(**kwargs)
        except NotFoundError as exc:
            if "index_not_found" in str(getattr(exc, "error", "")):
                raise SearchUnavailable(
                    f"OpenSearch at {self.settings.safe_urls()} has no index {self.settings.index!r} yet: "
                    "index the labels first (or point --index at another one)"
                ) from None
            if missing_ok:
                return None
            raise SearchUnavailable(f"OpenSearch at {self.settings.safe_urls()}: not found (HTTP 404)") from None
        except OSConnectionError:
            raise SearchUnavailable(f"OpenSearch at {self.settings.safe_urls()} unreachable") from None
        except TransportError as exc:
            if exc.status_code == 400:
                log.debug("OpenSearch refused a search: %s", exc.info)
                raise QueryError(f"OpenSearch refused the search: {exc.error}") from None
            if exc.status_code in (401, 403):
                raise SearchUnavailable(f"OpenSearch at {self.settings.safe_urls()} refused the credentials (HTTP {exc.status_code})") from None
            raise SearchUnavailable(f"OpenSearch at {self.settings.safe_urls()} failed: HTTP {exc.status_code} {exc.error}") from None

    def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        body = build_body(request)
        answer = self._call(self.client.search, index=self.settings.index, body=body)
        raw_hits = answer["hits"]["hits"]
        if "search_after" in body:
            # Never a hit at or before the cursor, whatever the engine's score precision (a repeated page
            # would make a client page forever).
            position = _sort_key(body["search_after"])
            raw_hits = [h for h in raw_hits if _sort_key(h.get("sort", [])) > position]
        more = request.size > 0 and len(raw_hits) > request.size
        raw_hits = raw_hits[: request.size]
        hits = [
            Hit(id=h["_id"], uri=h["_source"]["uri"], score=h.get("_score"), document=h["_source"])
            for h in raw_hits
        ]
        total = answer["hits"]["total"]
        response = SearchResponse(
            total=int(total["value"] if isinstance(total, dict) else total),
            hits=hits,
            facets=parse_facets(request, answer.get("aggregations", {})),
            next_cursor=encode_cursor(raw_hits[-1]["sort"]) if more and raw_hits else None,
        )
        if response.total == 0:
            response.not_produced = not_produced(request, self)
        response.took_ms = (time.perf_counter() - started) * 1000
        return response

    def filled(self, spec: FieldSpec) -> bool:
        """Any document has a value in this field (deleted rows are not in the index)."""
        query: dict[str, Any] = {"exists": {"field": spec.path}}
        if spec.nested:
            query = {"nested": {"path": NESTED_PATH, "query": query}}
        answer = self._call(self.client.count, index=self.settings.index, body={"query": query})
        return int(answer.get("count", 0)) > 0

    def labelers(self) -> list[str]:
        body = {"size": 0, "aggs": {"labelers": {"terms": {"field": "labeler", "size": 50}}}}
        answer = self._call(self.client.search, index=self.settings.index, body=body)
        return [b["key"] for b in answer.get("aggregations", {}).get("labelers", {}).get("buckets", [])]

    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        answer = self._call(self.client.get, missing_ok=True, index=self.settings.index, id=doc_id)
        return answer.get("_source") if answer and answer.get("found") else None

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
            self._client = None
