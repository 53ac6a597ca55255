"""Pick the search engine: OpenSearch when configured, else DuckDB over DEST's Parquet files.

    backend = open_backend(dest, OpenSearchSettings.from_env(), StorageOptions.from_env())
    try:
        response = backend.search(SearchRequest(filters=[parse_where("person.eyewear=sunglasses")]))
    finally:
        backend.close()

`search()` raises `QueryError` (the request is wrong: 400) or `SearchUnavailable`
(the engine could not answer: 503); both carry one readable line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from indexers.search.model import SearchBackend, SearchUnavailable

if TYPE_CHECKING:
    from indexers.opensearch.settings import OpenSearchSettings
    from workers.storage import StorageOptions


def open_backend(dest: Optional[str], opensearch: Optional["OpenSearchSettings"],
                 storage: Optional["StorageOptions"] = None) -> SearchBackend:
    """OpenSearch (read alias `opensearch.index`) when settings are given, else Parquet under `dest`.

    Raises `SearchUnavailable` (one line; the CLI shows it as a user error) when neither is
    given or DEST has no labels.
    """
    if opensearch is not None:
        from indexers.search.opensearch_backend import OpenSearchSearchBackend

        return OpenSearchSearchBackend(opensearch)
    if not dest:
        raise SearchUnavailable(
            "nothing to search: give DEST (the --out of a run, searched with DuckDB) "
            "or an OpenSearch URL (--opensearch-url / OPENSEARCH_URL)"
        )
    from indexers.search.parquet_backend import ParquetSearchBackend

    backend = ParquetSearchBackend(dest, storage)
    try:
        backend.check()
    except SearchUnavailable:
        backend.close()
        raise
    return backend
