"""Pick the search engine: OpenSearch when configured, else the embedded search database of DEST.

    backend = open_backend(dest, OpenSearchSettings.from_env(), StorageOptions.from_env())
    try:
        response = backend.search(SearchRequest(filters=[parse_where("person.eyewear=sunglasses")]))
    finally:
        backend.close()

`search()` raises `QueryError` (the request is wrong: 400) or `SearchUnavailable`
(the engine could not answer: 503); both carry one readable line.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from humantag.indexers.search.model import SearchBackend, SearchUnavailable

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from humantag.indexers.opensearch.settings import OpenSearchSettings
    from humantag.workers.storage import StorageOptions


def open_backend(dest: Optional[str], opensearch: Optional["OpenSearchSettings"],
                 storage: Optional["StorageOptions"] = None) -> SearchBackend:
    """OpenSearch (read alias `opensearch.index`) when settings are given, else the embedded search
    database of `dest` (built from DEST/labels on first use).

    Raises `SearchUnavailable` (one line; the CLI shows it as a user error) when neither is
    given, DEST does not exist or has no labels/.
    """
    if opensearch is not None:
        from humantag.indexers.search.opensearch_backend import OpenSearchSearchBackend

        return OpenSearchSearchBackend(opensearch)
    if not dest:
        raise SearchUnavailable(
            "nothing to search: give DEST (the --out of a run, searched with DuckDB) "
            "or an OpenSearch URL (--opensearch-url / OPENSEARCH_URL)"
        )
    return open_embedded(dest, storage)


def open_embedded(dest: str, storage: Optional["StorageOptions"] = None) -> SearchBackend:
    """The embedded search database of DEST (`search_db`); DuckDB over the Parquet files when another
    process holds that database (a `serve` running) or it cannot be written."""
    from humantag.indexers.search.parquet_backend import ParquetSearchBackend

    scan = ParquetSearchBackend(dest, storage)
    try:
        scan.check()
    except SearchUnavailable:
        scan.close()
        raise
    from humantag.indexers.search.embedded_backend import EmbeddedSearchBackend
    from humantag.indexers.search.search_db import SearchDatabase, SearchDatabaseBusy

    try:
        database = SearchDatabase(dest, scan.fs, scan.layout)
    except (SearchDatabaseBusy, OSError) as exc:
        log.info("search database unavailable (%s): scanning the Parquet files instead", exc)
        return scan
    scan.close()
    return EmbeddedSearchBackend(database)
