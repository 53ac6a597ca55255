"""A Parquet row as a search document: the same fields, plus bucket/prefix, minus nulls.

The document id is a hash of the source uri, so indexing a row again (a rerun,
a relabel, a rebuild) replaces the image's document instead of adding one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
from typing import Any

from fsspec.core import split_protocol


def document_id(uri: str) -> str:
    """Stable id of the image at `uri`: the first 32 hex digits of its SHA-256."""
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:32]


def bucket_and_prefix(uri: str) -> tuple[str, str]:
    """("media", "archive/2024") for s3://media/archive/2024/a.jpg; ("", "/data/photos") for local files."""
    protocol, path = split_protocol(uri)
    folder = posixpath.dirname(path)
    if protocol in (None, "file", "local"):
        return "", folder
    bucket, _, key_folder = folder.partition("/")
    return bucket, key_folder


def _clean(value: Any) -> Any:
    """JSON-ready, nulls dropped (a missing field and a null field search the same; smaller documents)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if v is not None]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    return value


def row_to_document(row: dict[str, Any]) -> dict[str, Any]:
    """The search document of one Parquet row (a dict as pyarrow's to_pylist gives it)."""
    document = _clean(row)
    bucket, prefix = bucket_and_prefix(row["uri"])
    document["bucket"] = bucket
    document["prefix"] = prefix
    return document
