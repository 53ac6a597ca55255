"""The index template: an explicit, strict mapping derived from the record schema.

Composable: two component templates (settings, mappings) and one index
template over the versioned physical indices `<index>-v<N>`. Every leaf of
`workers.records.LabeledImage` gets a type here by the same walk that builds
the Arrow schema, so a document can't carry a field the mapping lacks.
"""

from __future__ import annotations

import datetime as dt
import logging
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from humantag.indexers.documents import PERSON_TAGS
from humantag.indexers.fields import DERIVED_FIELDS, NESTED_PATH, TEXT_FIELDS
from humantag.workers.records import SCHEMA_VERSION, LabeledImage

log = logging.getLogger(__name__)

# Box coordinates are pixels; everything else numeric is a count, a size or a score.
_INTEGER_PARENTS = ("person_box", "face_box")


def _leaf_mapping(annotation: Any, path: str) -> dict[str, Any]:
    if path in TEXT_FIELDS:
        return {"type": "text", "analyzer": "english", "fields": {"raw": {"type": "keyword", "ignore_above": 1024}}}
    if get_origin(annotation) is Literal or annotation is str:
        return {"type": "keyword", "ignore_above": 2048}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        parent = path.rsplit(".", 2)[-2] if "." in path else ""
        return {"type": "integer"} if parent in _INTEGER_PARENTS or path.endswith("people_count") else {"type": "long"}
    if annotation is float:
        return {"type": "float"}
    if annotation is dt.datetime:
        return {"type": "date"}
    raise TypeError(f"no OpenSearch type for {annotation!r} at {path}")


def _properties(model: type[BaseModel], prefix: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        while get_origin(annotation) in (Union, types.UnionType, list):
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub: dict[str, Any] = {"properties": _properties(annotation, path + ".")}
            if path == NESTED_PATH:
                sub = {"type": "nested", **sub}
            properties[name] = sub
        else:
            properties[name] = _leaf_mapping(annotation, path)
    return properties


def index_mappings() -> dict[str, Any]:
    properties = _properties(LabeledImage, "")
    for name in DERIVED_FIELDS:
        properties[name] = {"type": "keyword", "ignore_above": 2048}
    properties[PERSON_TAGS] = {"type": "keyword", "ignore_above": 256}  # for Dashboards: see documents.person_tags
    return {
        "dynamic": "strict",
        "_meta": {"humantag_schema_version": SCHEMA_VERSION},
        "properties": properties,
    }


def index_settings() -> dict[str, Any]:
    # One primary is right for up to tens of millions of small documents; replicas are the cluster's call.
    return {"number_of_shards": 1, "refresh_interval": "1s"}


def component_template_names(index: str) -> tuple[str, str]:
    return f"{index}-settings", f"{index}-mappings"


def put_templates(client: Any, index: str) -> None:
    """Create or update the component templates and the index template (idempotent)."""
    settings_name, mappings_name = component_template_names(index)
    client.cluster.put_component_template(name=settings_name, body={"template": {"settings": index_settings()}})
    client.cluster.put_component_template(name=mappings_name, body={"template": {"mappings": index_mappings()}})
    client.indices.put_index_template(
        name=index,
        body={
            "index_patterns": [f"{index}-v*"],
            "composed_of": [settings_name, mappings_name],
            "priority": 200,
            "_meta": {"managed_by": "humantag", "schema_version": SCHEMA_VERSION},
        },
    )


def add_new_fields(client: Any, index: str) -> None:
    """Put today's mapping on an existing physical index: fields added to the schema since it was created
    (e.g. person_tags) become indexable without a rebuild. A changed type cannot be added: logged, and
    `humantag index --rebuild` is the way."""
    from opensearchpy.exceptions import RequestError

    try:
        client.indices.put_mapping(index=index, body={"properties": index_mappings()["properties"]})
    except RequestError as exc:
        log.warning("index %s: the mapping changed incompatibly (%s); run `humantag index OUT --rebuild`", index, exc.error)
