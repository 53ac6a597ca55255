"""A Parquet row as a search document: the same fields, plus bucket/prefix and person_tags, minus nulls.

The document id is a hash of the source uri, so indexing a row again (a rerun,
a relabel, a rebuild) replaces the image's document instead of adding one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import posixpath
from functools import lru_cache
from typing import Any, Optional

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


# Top-level keywords of the persons' attributes ("eyewear:sunglasses", "smiling:true"): standard
# OpenSearch Dashboards visualizations cannot aggregate the nested `persons`, they can this.
PERSON_TAGS = "person_tags"


@lru_cache(maxsize=1)
def _tag_fields() -> tuple[str, ...]:
    """Person fields that become tags: every enumeration and yes/no attribute of the schema."""
    from humantag.indexers.fields import all_fields

    return tuple(s.column for s in all_fields().values() if s.nested and (s.values or s.kind == "bool"))


def person_tags(persons: Optional[list[dict[str, Any]]]) -> list[str]:
    """`field:value` of every person's enumerated attributes, each once, in schema order."""
    tags: dict[str, None] = {}
    for name in _tag_fields():
        for person in persons or []:
            value = person.get(name)
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    tags[f"{name}:{str(item).lower() if isinstance(item, bool) else item}"] = None
    return list(tags)


def row_to_document(row: dict[str, Any]) -> dict[str, Any]:
    """The search document of one Parquet row (a dict as pyarrow's to_pylist gives it)."""
    document = _clean(row)
    bucket, prefix = bucket_and_prefix(row["uri"])
    document["bucket"] = bucket
    document["prefix"] = prefix
    tags = person_tags(row.get("persons"))
    if tags:
        document[PERSON_TAGS] = tags
    return document
