"""The JSON schema HumanVLM's attribute output is constrained to, derived from workers.attributes.

Every property is required and nullable, in a fixed order, with compact separators:
the model states each attribute (or `null` for "can't tell"), and the longest
possible output has a length we can compute. Each grammar token is at least one
byte and every string is ASCII (enums, keys, and `action` by pattern), so
`longest_output_bytes(schema) + 1` (the stop token) bounds the number of generated
tokens: with max_new_tokens at least that, the output always terminates and parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from humantag.workers.attributes import (
    SENSITIVE_PERSON_FIELDS,
    PersonAttributes,
    Scene,
    literal_values,
)

SEPARATORS = (",", ":")
# People counts above this are clamped by the grammar (crowds are "999").
MAX_PEOPLE_COUNT = 999
SCENE_FIELDS: tuple[str, ...] = tuple(name for name in Scene.model_fields if not name.endswith("_confidence"))


@dataclass(frozen=True)
class SchemaSpec:
    sensitive_attributes: bool = False
    max_persons: int = 8
    max_accessories: int = 4
    action_max_chars: int = 40


def person_fields(sensitive_attributes: bool) -> list[str]:
    return [
        name
        for name in PersonAttributes.model_fields
        if sensitive_attributes or name not in SENSITIVE_PERSON_FIELDS
    ]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _field_schema(name: str, annotation: object, spec: SchemaSpec) -> dict[str, Any]:
    args = get_args(annotation)
    if bool in args:
        return _nullable({"type": "boolean"})
    if any(getattr(a, "__origin__", None) is list for a in args):
        items = {"type": "string", "enum": literal_values(annotation)}
        return _nullable({"type": "array", "items": items, "maxItems": spec.max_accessories})
    values = literal_values(annotation)
    if values:
        return _nullable({"type": "string", "enum": values})
    if str in args:
        # A short lowercase verb phrase; ASCII only, so one token is at least one character.
        limit = min(spec.action_max_chars, _max_length(name))
        return _nullable({"type": "string", "pattern": f"^[a-z][a-z ,'-]{{0,{limit - 1}}}$"})
    raise TypeError(f"no JSON schema rule for attribute {name!r}: {annotation!r}")


def _max_length(name: str) -> int:
    for meta in PersonAttributes.model_fields[name].metadata:
        if getattr(meta, "max_length", None):
            return int(meta.max_length)
    return 10_000


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def person_schema(spec: SchemaSpec) -> dict[str, Any]:
    fields = PersonAttributes.model_fields
    return _object(
        {name: _field_schema(name, fields[name].annotation, spec) for name in person_fields(spec.sensitive_attributes)}
    )


def scene_schema() -> dict[str, Any]:
    return _object(
        {name: _nullable({"type": "string", "enum": literal_values(Scene.model_fields[name].annotation)}) for name in SCENE_FIELDS}
    )


def attributes_schema(spec: SchemaSpec) -> dict[str, Any]:
    return _object(
        {
            "people_count": {"type": "integer", "minimum": 0, "maximum": MAX_PEOPLE_COUNT},
            "scene": scene_schema(),
            "persons": {"type": "array", "items": person_schema(spec), "maxItems": spec.max_persons},
        }
    )


def _longest_instance(schema: dict[str, Any]) -> Any:
    """The instance of `schema` whose compact JSON is longest."""
    if "anyOf" in schema:
        return max((_longest_instance(s) for s in schema["anyOf"]), key=_dumped_len)
    kind = schema.get("type")
    if "enum" in schema:
        return max(schema["enum"], key=_dumped_len)
    if kind == "null":
        return None
    if kind == "boolean":
        return False
    if kind == "integer":
        return schema["maximum"]
    if kind == "string":
        # pattern ^[a-z][a-z ,'-]{0,N}$: N + 1 one-byte characters at most.
        limit = int(schema["pattern"].rsplit(",", 1)[1].split("}")[0]) + 1
        return "a" * limit
    if kind == "array":
        return [_longest_instance(schema["items"])] * schema["maxItems"]
    if kind == "object":
        return {name: _longest_instance(sub) for name, sub in schema["properties"].items()}
    raise TypeError(f"unbounded schema node {schema!r}")


def _dumped_len(value: Any) -> int:
    return len(json.dumps(value, separators=SEPARATORS).encode())


def longest_output_bytes(schema: dict[str, Any]) -> int:
    return _dumped_len(_longest_instance(schema))


def token_bound(spec: SchemaSpec) -> int:
    """max_new_tokens that guarantees a complete output for `spec` (+1 for the stop token)."""
    return longest_output_bytes(attributes_schema(spec)) + 1


def persons_within(spec: SchemaSpec, max_new_tokens: int) -> int:
    """The most persons (<= spec.max_persons) whose worst-case output fits in max_new_tokens."""
    for n in range(spec.max_persons, -1, -1):
        if token_bound(SchemaSpec(spec.sensitive_attributes, n, spec.max_accessories, spec.action_max_chars)) <= max_new_tokens:
            return n
    raise ValueError(
        f"attributes_max_new_tokens={max_new_tokens} cannot hold even an output with no persons "
        f"({token_bound(SchemaSpec(spec.sensitive_attributes, 0, spec.max_accessories, spec.action_max_chars))} tokens needed)"
    )


def describe_fields(spec: SchemaSpec) -> str:
    """One line per attribute with its allowed values, for the prompt."""
    lines = ["people_count: integer, everyone visible in the image"]
    for name, sub in scene_schema()["properties"].items():
        lines.append(f"scene.{name}: {' | '.join(sub['anyOf'][0]['enum'])} | null")
    for name, sub in person_schema(spec)["properties"].items():
        inner = sub["anyOf"][0]
        if inner["type"] == "boolean":
            allowed = "true | false | null"
        elif inner["type"] == "array":
            allowed = f"list of up to {inner['maxItems']} of: {', '.join(inner['items']['enum'])}"
        elif "enum" in inner:
            allowed = " | ".join(inner["enum"]) + " | null"
        else:
            allowed = "short lowercase phrase | null"
        lines.append(f"persons[].{name}: {allowed}")
    return "\n".join(lines)
