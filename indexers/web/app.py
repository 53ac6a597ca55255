"""The HTTP API and the page of `humantag serve`.

    GET /                               the search page (static HTML/JS/CSS, no CDN)
    GET /api/search?where=&text=&facet=&size=&after=   SearchResponse as JSON
    GET /api/fields                     the searchable fields, for building the page
    GET /api/documents/{id}             one document (404 if unknown)
    GET /api/thumbnails/{id}.jpg        a JPEG thumbnail made from the source image
    GET /api/originals/{id}             the source image itself, read by the server (same guards)
    GET /api/interpret?q=               a plain-language query as where filters
    GET /healthz                        liveness

Any search backend (`indexers.search.model.SearchBackend`) answers the queries.
Thumbnails are only made for images the backend knows: the client names a
document id, the server looks its uri up; a path or uri from the client is
never read. Errors are JSON `{"error": "<one line>"}` with a 4xx/5xx status,
never a traceback.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from humantag.indexers.fields import DEFAULT_FACETS, all_fields
from humantag.indexers.search.model import (
    MAX_PAGE_SIZE,
    MAX_TEXT_LENGTH,
    QueryError,
    SearchBackend,
    SearchRequest,
    SearchUnavailable,
    check_facets,
    parse_where,
)
from humantag.indexers.search.plain import interpret
from humantag.indexers.web.thumbnails import DEFAULT_CACHE_BYTES, SourceUnreadable, ThumbnailError, ThumbnailMaker
from humantag.workers.storage import StorageOptions

log = logging.getLogger("humantag.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_DOC_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_WHERE = 32
MAX_FACETS = 40
# The page loads only its own files: no CDN, no inline script, no third-party anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status)


def _one_line(message: str, limit: int = 300) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    """`size: Input should be less than or equal to 1000` from pydantic's error list."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body"))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))


def _source_version(document: dict[str, Any]) -> str:
    """What changes when the source image changes: etag, else mtime + size."""
    return str(document.get("etag") or f"{document.get('mtime', '')}-{document.get('size_bytes', '')}")


class _KnownImages:
    """doc id → (uri, source version) for ids the backend returned recently.

    A page of hits is followed by a thumbnail request per hit: remembering
    what the search just said saves one backend lookup each. Only the backend
    ever fills it, so it cannot widen what may be read.
    """

    def __init__(self, max_items: int = 20_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, doc_id: str, document: dict[str, Any]) -> None:
        uri = document.get("uri")
        if not uri:
            return
        with self._lock:
            self._items[doc_id] = (str(uri), _source_version(document))
            self._items.move_to_end(doc_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def lookup(self, doc_id: str) -> Optional[tuple[str, str]]:
        with self._lock:
            return self._items.get(doc_id)


def create_app(
    backend: SearchBackend,
    storage: StorageOptions,
    thumbnail_px: int = 256,
    *,
    thumbnail_cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_source_bytes: Optional[int] = None,
) -> FastAPI:
    """The FastAPI app serving `backend`; source images are read with `storage`'s credentials."""
    thumbnails = ThumbnailMaker(storage, size_px=thumbnail_px, cache_bytes=thumbnail_cache_bytes,
                                **({"max_source_bytes": max_source_bytes} if max_source_bytes else {}))
    known = _KnownImages()
    app = FastAPI(
        title="humantag",
        description="Search labeled images by the people in them.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.backend = backend
    app.state.thumbnails = thumbnails

    @app.exception_handler(RequestValidationError)
    async def _bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error (see the server log)")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    def _lookup(doc_id: str) -> Optional[dict[str, Any]]:
        """The backend's document for a well-formed id; None otherwise (SearchUnavailable propagates)."""
        if not _DOC_ID.match(doc_id):
            return None
        return backend.get(doc_id)

    @app.exception_handler(SearchUnavailable)
    async def _unavailable(request: Request, exc: SearchUnavailable) -> JSONResponse:
        log.warning("%s %s: search backend unavailable: %s", request.method, request.url.path, exc)
        return _error(503, str(exc))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/api/fields")
    def fields() -> dict[str, Any]:
        """Every searchable field: name, kind, allowed values, whether it can be a facet."""
        return {
            "fields": [
                {"name": f.name, "kind": f.kind, "values": list(f.values), "facetable": f.facetable,
                 "is_list": f.is_list, "person": f.nested}
                for f in all_fields().values()
            ],
            "default_facets": list(DEFAULT_FACETS),
            "backend": backend.describe(),
            "max_page_size": MAX_PAGE_SIZE,
        }

    @app.get("/api/interpret")
    def interpret_query(q: str = Query(max_length=MAX_TEXT_LENGTH, description="Plain words, e.g. two people, one in sunglasses")) -> Response:
        """What a plain-language query means: where filters (and negated words nothing in the schema matches)."""
        try:
            meaning = interpret(q)
        except QueryError as exc:
            return _error(400, str(exc))
        return JSONResponse({"query": meaning.query, "where": meaning.where, "ignored": meaning.ignored})

    @app.get("/api/search")
    def search(
        q: Optional[str] = Query(default=None, max_length=MAX_TEXT_LENGTH, description="Plain words, turned into where filters (see /api/interpret)."),
        where: list[str] = Query(default=[], description="FIELD OP VALUE, e.g. person.eyewear=sunglasses (repeatable; AND-ed)"),
        text: Optional[str] = Query(default=None, description="Words matched against the caption."),
        facet: Optional[list[str]] = Query(default=None, description="Fields to count by value (repeatable); default: the usual facets; an empty value: none."),
        size: int = Query(default=20, ge=0, le=MAX_PAGE_SIZE),
        after: Optional[str] = Query(default=None, max_length=2048, description="next_cursor of the previous page."),
        facet_size: int = Query(default=20, ge=1, le=200),
        include_deleted: bool = Query(default=False, description="Also rows of objects deleted from the source (Parquet backend)."),
    ) -> Response:
        if len(where) > MAX_WHERE:
            return _error(400, f"at most {MAX_WHERE} where filters")
        try:
            meaning = interpret(q) if q and q.strip() else None
            filters = [parse_where(w) for w in where if w.strip()]
            if meaning is not None:
                filters = meaning.filters + filters
            facets = list(DEFAULT_FACETS) if facet is None else [f.strip() for f in facet if f.strip()]
            if len(facets) > MAX_FACETS:
                raise QueryError(f"at most {MAX_FACETS} facets")
            check_facets(facets)
            request = SearchRequest(filters=filters, text=(text or "").strip() or None, facets=facets,
                                    facet_size=facet_size, size=size, after=after or None,
                                    include_deleted=include_deleted)
        except QueryError as exc:
            return _error(400, str(exc))
        except ValidationError as exc:
            return _error(400, _validation_message(exc))
        started = time.perf_counter()
        try:
            result = backend.search(request)
        except QueryError as exc:  # e.g. a cursor that is not ours
            return _error(400, str(exc))
        except SearchUnavailable as exc:
            log.warning("search unavailable: %s", exc)
            return _error(503, str(exc))
        except Exception:  # noqa: BLE001 - logged with detail; the client gets one line
            log.exception("search failed: %s", request.model_dump_json())
            return _error(503, "the search backend failed (see the server log)")
        for hit in result.hits:
            known.remember(hit.id, {**hit.document, "uri": hit.uri})
        log.info("search filters=%d text=%r → %d hits of %d in %.0f ms", len(filters), request.text,
                 len(result.hits), result.total, (time.perf_counter() - started) * 1000)
        body = result.model_dump(mode="json")
        body["not_produced"] = [{**n.model_dump(mode="json"), "message": n.message} for n in result.not_produced]
        if meaning is not None:
            body["interpreted"] = meaning.where
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @app.get("/api/documents/{doc_id}")
    def document(doc_id: str) -> Response:
        doc = _lookup(doc_id)
        if doc is None:
            return _error(404, f"no document {doc_id[:64]!r}")
        known.remember(doc_id, doc)
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    def _source(doc_id: str) -> Optional[tuple[str, str]]:
        """(uri, source version) of an image the backend knows; None for any other id."""
        entry = known.lookup(doc_id) if _DOC_ID.match(doc_id) else None
        if entry is None:
            doc = _lookup(doc_id)
            if doc is None or not doc.get("uri"):
                return None
            known.remember(doc_id, doc)
            entry = (str(doc["uri"]), _source_version(doc))
        return entry

    @app.get("/api/originals/{doc_id}")
    def original(doc_id: str) -> Response:
        """The source image of an indexed document, read by the server (local or S3, its credentials),
        refused above --max-image-mb; only image formats are served, never a page."""
        entry = _source(doc_id)
        if entry is None:
            return _error(404, f"no document {doc_id[:64]!r}")
        uri, _ = entry
        try:
            data = thumbnails.read_source(uri)
            media_type = _image_media_type(data)
        except ThumbnailError as exc:
            log.info("original %s (%s): %s", doc_id, uri, exc.message)
            return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=exc.status,
                                headers={"Cache-Control": "no-store"})
        name = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rsplit("/", 1)[-1])[:120] or "image"
        return Response(data, media_type=media_type, headers={
            "Content-Disposition": f'inline; filename="{name}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
        })

    @app.get("/api/thumbnails/{doc_id}.jpg")
    def thumbnail(doc_id: str, request: Request) -> Response:
        """A JPEG of at most thumbnail_px on the long side, of an image the index knows."""
        entry = _source(doc_id)
        if entry is None:
            return _error(404, f"no document {doc_id[:64]!r}")
        uri, version = entry
        etag = thumbnails.etag(doc_id, version)
        headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
        if etag in _etags(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        try:
            thumb = thumbnails.get(doc_id, uri, version)
        except ThumbnailError as exc:
            log.info("thumbnail %s (%s): %s", doc_id, uri, exc.message)
            return JSONResponse({"error": exc.message, "kind": exc.kind}, status_code=exc.status,
                                headers={"Cache-Control": "no-store"})
        return Response(thumb.data, media_type="image/jpeg", headers=headers)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _image_media_type(data: bytes) -> str:
    """The MIME type of an image the browser can show; SourceUnreadable for anything else."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            media_type = Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        media_type = None
    if not media_type or not media_type.startswith("image/"):
        raise SourceUnreadable("not_an_image", "the source is not an image the browser can show")
    return media_type


def _etags(header: Optional[str]) -> set[str]:
    if not header:
        return set()
    return {part.strip().removeprefix("W/") for part in header.split(",")}
