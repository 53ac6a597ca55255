"""What a search asks and answers, independent of the engine behind it.

`parse_where` turns `people_count>=2`, `person.eyewear=sunglasses,glasses`,
`scene.setting!=beach` or `caption~red dress` into a validated `Filter`: the
field must exist in the catalogue (`indexers.fields`), the operator must suit
its kind, an enumeration's value must be one of its values. Nothing a user
types ever becomes query syntax: values only reach term/range filters and
`match` queries (OpenSearch) or bound parameters (DuckDB).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any, Literal, Optional, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field

from humantag.indexers.fields import DEFAULT_FACETS, FieldSpec, all_fields, unknown_field_message

Operator = Literal["=", "!=", ">=", "<=", ">", "<", "~"]
Scalar = Union[bool, int, float, str]

MAX_TEXT_LENGTH = 512
MAX_VALUE_LENGTH = 256
MAX_PAGE_SIZE = 1000
MAX_PERSON_GROUPS = 9
_PERSON_N = re.compile(r"^person([1-9])\.(.+)$")
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|!=|=|>|<|~)\s*(.*?)\s*$", re.DOTALL)
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}


class QueryError(ValueError):
    """A query the user can fix: unknown field, bad operator or value. One readable line."""


class Filter(BaseModel):
    """`field op value[,value...]`: `=` matches any of the values, `!=` none of them.

    Person filters with the same `person` number describe one person; `person2.eyewear=glasses` is
    a second person (who may be anyone in the photo, the first one included).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    field: str
    op: Operator
    values: tuple[Scalar, ...]
    person: int = Field(default=1, ge=1, le=MAX_PERSON_GROUPS)

    @property
    def spec(self) -> FieldSpec:
        return all_fields()[self.field]

    @property
    def where(self) -> str:
        """The filter as `--where` text, which `parse_where` reads back to an equal filter."""
        name = self.field
        if self.spec.nested and self.person > 1:
            name = f"person{self.person}.{self.spec.column}"
        return f"{name}{self.op}{','.join(_value_text(v) for v in self.values)}"


def _value_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def person_groups(filters: list[Filter]) -> dict[int, list[Filter]]:
    """The person filters by person number, in order: each group must hold for one person."""
    groups: dict[int, list[Filter]] = {}
    for flt in filters:
        if flt.spec.nested:
            groups.setdefault(flt.person, []).append(flt)
    return dict(sorted(groups.items()))


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: list[Filter] = Field(default_factory=list)
    text: Optional[str] = Field(default=None, max_length=MAX_TEXT_LENGTH)  # matched against the caption
    facets: list[str] = Field(default_factory=lambda: list(DEFAULT_FACETS))
    facet_size: int = Field(default=20, ge=1, le=200)
    size: int = Field(default=20, ge=0, le=MAX_PAGE_SIZE)
    after: Optional[str] = None  # cursor from the previous page's `next_cursor`
    include_deleted: bool = False


class FacetBucket(BaseModel):
    value: Scalar
    count: int  # images (not persons) with this value


class Hit(BaseModel):
    id: str  # stable hash of the uri (indexers.documents.document_id)
    uri: str
    score: Optional[float] = None
    document: dict[str, Any]


class NotProduced(BaseModel):
    """A filtered field that no row has ever filled: the labelers that made the rows do not produce it."""

    field: str
    labelers: list[str]  # that made the rows, most rows first
    docs: list[str]  # their documentation (paths in the repository)

    @property
    def message(self) -> str:
        made = ", ".join(self.labelers) or "no labeler"
        which = "this labeler does" if len(self.labelers) == 1 else "these labelers do"
        see = f" (see {', '.join(self.docs)})" if self.docs else ""
        return f"{self.field}: no row has it: the rows were made by {made}; {which} not produce this field{see}"


class SearchResponse(BaseModel):
    total: int
    hits: list[Hit]
    facets: dict[str, list[FacetBucket]] = Field(default_factory=dict)
    next_cursor: Optional[str] = None  # None on the last page
    took_ms: float = 0.0
    # Set when nothing matched and a filter names a field the rows never have (why 0 is 0).
    not_produced: list[NotProduced] = Field(default_factory=list)


class FieldProbe(Protocol):
    """What an engine can tell about the rows it holds."""

    def filled(self, spec: FieldSpec) -> bool:
        """Any row (person, for person fields) has a value in this field."""
        ...

    def labelers(self) -> list[str]:
        """The labelers that made the rows, most rows first."""
        ...


def not_produced(request: "SearchRequest", probe: FieldProbe) -> list[NotProduced]:
    """The request's fields that no row has ever filled, with the labelers that made the rows."""
    from humantag.workers.labelers import labeler_doc

    names = list(dict.fromkeys([f.field for f in request.filters] + (["caption"] if request.text else [])))
    missing = [name for name in names if not probe.filled(all_fields()[name])]
    if not missing:
        return []
    labelers = probe.labelers()
    docs = list(dict.fromkeys(d for d in (labeler_doc(name) for name in labelers) if d))
    return [NotProduced(field=name, labelers=labelers, docs=docs) for name in missing]


class SearchBackend(Protocol):
    """An engine that answers `SearchRequest`s: OpenSearch, or DuckDB over the Parquet output."""

    def search(self, request: SearchRequest) -> SearchResponse: ...

    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        """The document with this id, or None."""
        ...

    def describe(self) -> str:
        """Where the answers come from, for logs and the page (never credentials)."""
        ...

    def close(self) -> None: ...


def _parse_scalar(spec: FieldSpec, raw: str) -> Scalar:
    text = raw.strip()
    if not text:
        raise QueryError(f"{spec.name}: empty value")
    if len(text) > MAX_VALUE_LENGTH:
        raise QueryError(f"{spec.name}: value longer than {MAX_VALUE_LENGTH} characters")
    if spec.kind == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise QueryError(f"{spec.name} is true or false, not {text!r}")
    if spec.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise QueryError(f"{spec.name} is a whole number, not {text!r}") from None
    if spec.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise QueryError(f"{spec.name} is a number, not {text!r}") from None
    if spec.kind == "date":
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(f"{spec.name} is a date (ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00:00Z), not {text!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return parsed.isoformat()
    if spec.values and text not in spec.values:
        raise QueryError(f"{spec.name} is one of {', '.join(spec.values)}; not {text!r}")
    return text


def make_filter(name: str, op: str, raw_value: str) -> Filter:
    """A validated filter; QueryError says what is wrong in one line. `person2.x` is `person.x` of a second person."""
    person = 1
    numbered = _PERSON_N.match(name)
    if numbered:
        person, name = int(numbered.group(1)), f"person.{numbered.group(2)}"
    spec = all_fields().get(name)
    if spec is None:
        raise QueryError(unknown_field_message(name))
    if op == "~":
        if spec.kind != "text":
            raise QueryError(f"~ (words in text) works on text fields ({', '.join(_text_fields())}); use = for {name}")
        words = raw_value.strip()
        if not words:
            raise QueryError(f"{name}: empty text")
        if len(words) > MAX_TEXT_LENGTH:
            raise QueryError(f"{name}: text longer than {MAX_TEXT_LENGTH} characters")
        return Filter(field=name, op="~", values=(words,), person=person)
    if spec.kind == "text":
        raise QueryError(f"{name} is free text: search it with {name}~words")
    if op in (">=", "<=", ">", "<"):
        if spec.kind not in ("int", "float", "date"):
            raise QueryError(f"{op} needs a number or date field; {name} is {spec.kind}")
        return Filter(field=name, op=op, values=(_parse_scalar(spec, raw_value),), person=person)  # type: ignore[arg-type]
    values = tuple(dict.fromkeys(_parse_scalar(spec, part) for part in raw_value.split(",")))
    return Filter(field=name, op=op, values=values, person=person)  # type: ignore[arg-type]


def parse_where(expression: str) -> Filter:
    """`people_count>=2`, `person.eyewear=sunglasses`, `scene.setting!=beach,street`, `caption~red dress`."""
    match = _WHERE.match(expression)
    if not match:
        raise QueryError(
            f"cannot read {expression!r}: write FIELD OP VALUE with OP one of = != >= <= > < ~ "
            "(e.g. people_count>=2, person.eyewear=sunglasses)"
        )
    name, op, value = match.groups()
    return make_filter(name, op, value)


def check_facets(names: list[str]) -> list[str]:
    for name in names:
        spec = all_fields().get(name)
        if spec is None:
            raise QueryError(unknown_field_message(name))
        if not spec.facetable:
            raise QueryError(f"{name} cannot be a facet (too many distinct values or free text)")
    return names


def _text_fields() -> list[str]:
    return [f.name for f in all_fields().values() if f.kind == "text"]


def encode_cursor(sort_values: list[Scalar]) -> str:
    return base64.urlsafe_b64encode(json.dumps(sort_values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Scalar]:
    """The sort values of the last hit of the previous page; QueryError for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        raise QueryError("invalid cursor: pass back next_cursor from the previous page") from None
    if not isinstance(values, list) or not 1 <= len(values) <= 3 or not all(
        isinstance(v, (bool, int, float, str)) or v is None for v in values
    ):
        raise QueryError("invalid cursor: pass back next_cursor from the previous page")
    return values


class SearchUnavailable(RuntimeError):
    """The engine could not answer (OpenSearch unreachable, no index yet, DEST unreadable). One readable line,
    never credentials; a web server answers 503 with it, the CLI prints it."""
