"""Confidences from token probabilities under the constrained distribution.

The confidence of an attribute value is the joint probability of the tokens that
spell it (for a list, the whole list literal), each token's probability taken
from the softmax of the grammar-masked logits, i.e. the distribution the greedy
decoder actually chose from. Tokens the grammar forces (keys, punctuation) have
probability 1 there, so a token that merges a value with a forced neighbour
(`":"adult`) contributes only the model's real choice.
"""

from __future__ import annotations

import json
import math
from typing import Any, Union

from humantag.workers.attributes import ENUMERATED_PERSON_FIELDS

PathKey = tuple[Union[str, int], ...]

_DECODER = json.JSONDecoder()


def value_spans(text: str) -> dict[PathKey, tuple[int, int]]:
    """Character span of every value in a compact JSON document, keyed by its path."""
    spans: dict[PathKey, tuple[int, int]] = {}
    end = _walk(text, 0, (), spans)
    if text[end:].strip():
        raise ValueError(f"trailing data after JSON at {end}")
    return spans


def _walk(text: str, pos: int, path: PathKey, spans: dict[PathKey, tuple[int, int]]) -> int:
    start = pos
    char = text[pos]
    if char == "{":
        pos += 1
        if text[pos] == "}":
            pos += 1
        else:
            while True:
                key, pos = _DECODER.raw_decode(text, pos)
                if text[pos] != ":":
                    raise ValueError(f"expected ':' at {pos}")
                pos = _walk(text, pos + 1, path + (key,), spans)
                if text[pos] == "}":
                    pos += 1
                    break
                if text[pos] != ",":
                    raise ValueError(f"expected ',' or '}}' at {pos}")
                pos += 1
    elif char == "[":
        pos += 1
        index = 0
        if text[pos] == "]":
            pos += 1
        else:
            while True:
                pos = _walk(text, pos, path + (index,), spans)
                index += 1
                if text[pos] == "]":
                    pos += 1
                    break
                if text[pos] != ",":
                    raise ValueError(f"expected ',' or ']' at {pos}")
                pos += 1
    else:
        _, pos = _DECODER.raw_decode(text, pos)
    spans[path] = (start, pos)
    return pos


class TokenProbabilities:
    """Generated tokens laid over the decoded text: offsets and per-token probabilities."""

    def __init__(self, token_texts: list[str], probabilities: list[float]) -> None:
        self.offsets: list[int] = []
        position = 0
        for piece in token_texts:
            self.offsets.append(position)
            position += len(piece)
        self.ends = self.offsets[1:] + [position]
        self.text = "".join(token_texts)
        self.probabilities = probabilities

    def span_probability(self, start: int, end: int) -> float:
        log_p = 0.0
        for tok_start, tok_end, p in zip(self.offsets, self.ends, self.probabilities):
            if tok_start < end and tok_end > start:
                log_p += math.log(max(p, 1e-12))
        return min(1.0, max(0.0, math.exp(log_p)))


def confidences(
    tokens: TokenProbabilities, spans: dict[PathKey, tuple[int, int]], parsed: dict[str, Any]
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Scene confidences by field and one dict per person, for enumerated non-null values.

    Free text (`action`) gets none: the probability of a phrase says little about its truth.
    """
    scene: dict[str, float] = {}
    for name, value in (parsed.get("scene") or {}).items():
        if value is not None:
            scene[name] = tokens.span_probability(*spans[("scene", name)])
    persons: list[dict[str, float]] = []
    for index, person in enumerate(parsed.get("persons") or []):
        persons.append(
            {
                name: tokens.span_probability(*spans[("persons", index, name)])
                for name, value in person.items()
                if value is not None and name in ENUMERATED_PERSON_FIELDS
            }
        )
    return scene, persons
