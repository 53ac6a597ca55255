"""The searchable fields: one catalogue derived from the record schema.

`workers.records.LabeledImage` is walked once; every leaf becomes a `FieldSpec`
with its user-facing name (`people_count`, `scene.setting`, `person.eyewear`),
its path in an OpenSearch document / Parquet row (`persons.eyewear`), its kind
and, for enumerations, the allowed values. The OpenSearch mapping, the query
builders (OpenSearch and DuckDB) and the web page's facets all read this, so a
new attribute in `workers.attributes` is searchable without touching them.
"""

from __future__ import annotations

import datetime as dt
import types
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from humantag.workers.records import LabeledImage

FieldKind = Literal["keyword", "text", "bool", "int", "float", "date"]

# Fields of the document that are not columns of the Parquet row: derived from `uri`.
DERIVED_FIELDS = ("bucket", "prefix")
# Free text: analysed (English) with a keyword sub-field `raw` for exact match and facets.
TEXT_FIELDS = ("caption", "error_message", "persons.action")
# Sub-objects searched only as whole documents (boxes, confidences): mapped, not offered as filters.
NOT_SEARCHABLE = ("persons.person_box", "persons.face_box", "persons.confidence")
NESTED_PATH = "persons"
SMALL_COUNTS = ("people_count", "faces_visible")
UNIQUE_KEYWORDS = ("uri", "phash", "etag")
PERSON_PREFIX = "person."


@dataclass(frozen=True)
class FieldSpec:
    name: str  # what a user writes: people_count, scene.setting, person.eyewear
    path: str  # where it lives in a document / row: people_count, scene.setting, persons.eyewear
    kind: FieldKind
    values: tuple[str, ...] = ()  # allowed values of an enumeration, in schema order
    is_list: bool = False  # e.g. persons.accessories

    @property
    def nested(self) -> bool:
        """True for person-level fields: all person filters of a query must match one person."""
        return self.path.startswith(NESTED_PATH + ".")

    @property
    def column(self) -> str:
        """The path relative to its row: `eyewear` for persons.eyewear, else the path."""
        return self.path[len(NESTED_PATH) + 1 :] if self.nested else self.path

    @property
    def facetable(self) -> bool:
        """Worth counting by value: enumerations, booleans, small counts, low-cardinality keywords."""
        if self.kind == "int":
            return self.name in SMALL_COUNTS
        return self.kind in ("keyword", "bool") and self.name not in UNIQUE_KEYWORDS


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) of Optional[X] / Optional[list[X]]."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(inner[0])
    if origin is list:
        inner, _ = _unwrap(get_args(annotation)[0])
        return inner, True
    return annotation, False


def _kind(annotation: Any, path: str) -> tuple[FieldKind, tuple[str, ...]]:
    if path in TEXT_FIELDS:
        return "text", ()
    if get_origin(annotation) is Literal:
        return "keyword", tuple(str(v) for v in get_args(annotation))
    simple: dict[Any, FieldKind] = {str: "keyword", bool: "bool", int: "int", float: "float", dt.datetime: "date"}
    if annotation in simple:
        return simple[annotation], ()
    raise TypeError(f"no search kind for {annotation!r} at {path}")


def _walk(model: type[BaseModel], prefix: str) -> list[tuple[str, Any, bool]]:
    """(path, leaf annotation, is_list) for every leaf of `model`, sub-models flattened with dots."""
    leaves: list[tuple[str, Any, bool]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner, is_list = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            leaves.extend(_walk(inner, path + "."))
        else:
            leaves.append((path, inner, is_list))
    return leaves


def _user_name(path: str) -> str:
    if path.startswith(NESTED_PATH + "."):
        return PERSON_PREFIX + path[len(NESTED_PATH) + 1 :]
    return path


@lru_cache(maxsize=1)
def all_fields() -> dict[str, FieldSpec]:
    """Every searchable field by user-facing name, in schema order."""
    fields: dict[str, FieldSpec] = {}
    for path, annotation, is_list in _walk(LabeledImage, ""):
        if any(path == hidden or path.startswith(hidden + ".") for hidden in NOT_SEARCHABLE):
            continue
        kind, values = _kind(annotation, path)
        spec = FieldSpec(name=_user_name(path), path=path, kind=kind, values=values, is_list=is_list)
        fields[spec.name] = spec
    for name in DERIVED_FIELDS:
        fields[name] = FieldSpec(name=name, path=name, kind="keyword")
    return fields


def field(name: str) -> FieldSpec:
    """The field a user named; KeyError with the known names otherwise (see `unknown_field_message`)."""
    return all_fields()[name]


def value_suggestions(name: str) -> list[str]:
    """`person.eyewear=glasses` for `person.glasses`: fields (same prefix first) having the last part as a value."""
    import difflib

    prefix, _, word = name.rpartition(".")
    word = word.lower().replace("_", "-")
    exact, close = [], []
    for spec in all_fields().values():
        matches = difflib.get_close_matches(word, spec.values, n=1, cutoff=0.85)
        if not matches:
            continue
        ranked = exact if matches[0] == word else close
        same_prefix = spec.name.startswith(prefix + ".") if prefix else True
        ranked.append((not same_prefix, f"{spec.name}={matches[0]}"))
    return [text for _, text in sorted(exact, key=lambda t: t[0]) + sorted(close, key=lambda t: t[0])]


def unknown_field_message(name: str) -> str:
    import difflib

    names = list(all_fields())
    close = value_suggestions(name)[:3]
    close += difflib.get_close_matches(name, names, n=3 - len(close)) if len(close) < 3 else []
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known fields: {', '.join(names)}"
    return f"unknown field {name!r}{hint}"


# Facets shown when none are asked for: what narrows a search of people photos.
DEFAULT_FACETS = (
    "people_count",
    "scene.environment",
    "scene.setting",
    "person.age_group",
    "person.expression",
    "person.eyewear",
    "person.headwear",
    "person.upper_clothing",
    "person.upper_clothing_color",
    "person.face_visible",
    "status",
    "labeler",
)
