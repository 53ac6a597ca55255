"""The attribute JSON schema, its token bound, and span/confidence arithmetic (no model)."""

from __future__ import annotations

import json
import math

import pytest

from humantag.workers.attributes import ENUMERATED_PERSON_FIELDS, SENSITIVE_PERSON_FIELDS, Person, Scene
from humantag.workers.labelers.humanvlm.confidence import TokenProbabilities, confidences, value_spans
from humantag.workers.labelers.humanvlm.schema import (
    SEPARATORS,
    SchemaSpec,
    _longest_instance,
    attributes_schema,
    describe_fields,
    persons_within,
    token_bound,
)


def test_sensitive_fields_only_when_enabled() -> None:
    off = attributes_schema(SchemaSpec())["properties"]["persons"]["items"]["properties"]
    on = attributes_schema(SchemaSpec(sensitive_attributes=True))["properties"]["persons"]["items"]["properties"]
    for name in SENSITIVE_PERSON_FIELDS:
        assert name not in off and name not in describe_fields(SchemaSpec())
        assert name in on and name in describe_fields(SchemaSpec(sensitive_attributes=True))
    assert "race" not in json.dumps(on) and "ethnic" not in json.dumps(on)


def test_longest_instance_is_a_valid_record_and_bounds_tokens() -> None:
    spec = SchemaSpec(max_persons=2)
    longest = _longest_instance(attributes_schema(spec))
    assert len(longest["persons"]) == 2
    for person in longest["persons"]:
        Person(**person)
    Scene(**longest["scene"])
    assert token_bound(spec) == len(json.dumps(longest, separators=SEPARATORS)) + 1
    assert token_bound(SchemaSpec(max_persons=3)) > token_bound(spec)


def test_persons_within_budget() -> None:
    spec = SchemaSpec(max_persons=8)
    assert persons_within(spec, token_bound(SchemaSpec(max_persons=2))) == 2
    assert persons_within(spec, token_bound(SchemaSpec(max_persons=2)) - 1) == 1
    assert persons_within(spec, 10**6) == 8
    with pytest.raises(ValueError, match="cannot hold"):
        persons_within(spec, 10)


def test_value_spans_and_confidences() -> None:
    text = '{"people_count":1,"scene":{"environment":"indoor","setting":null},"persons":[{"age_group":"adult","accessories":["bag","tie"],"action":"waving"}]}'
    spans = value_spans(text)
    assert text[slice(*spans[("scene", "environment")])] == '"indoor"'
    assert text[slice(*spans[("persons", 0, "accessories")])] == '["bag","tie"]'
    # One token per character except the value "adult" spelled by two tokens of p=0.5 and 0.4.
    start, end = spans[("persons", 0, "age_group")]
    pieces = list(text[:start]) + [text[start:start + 3], text[start + 3:end]] + list(text[end:])
    probs = [1.0] * len(pieces)
    probs[start], probs[start + 1] = 0.5, 0.4
    tokens = TokenProbabilities(pieces, probs)
    scene, persons = confidences(tokens, spans, json.loads(text))
    assert scene == {"environment": 1.0}  # null setting: no confidence
    assert math.isclose(persons[0]["age_group"], 0.2)
    assert persons[0]["accessories"] == 1.0
    assert "action" not in persons[0]
    assert set(persons[0]) <= set(ENUMERATED_PERSON_FIELDS)
