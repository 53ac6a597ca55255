"""A plain-language caption composed only from fields the detectors filled."""

from __future__ import annotations

from humantag.workers.attributes import Person, Quality


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def compose_caption(persons: list[Person], faces_visible: int, quality: Quality) -> str:
    if not persons:
        parts = ["No person detected"]
    else:
        parts = [f"{_count(len(persons), 'person').replace('persons', 'people')}, {_count(faces_visible, 'face')} visible"]
        smiling = sum(1 for p in persons if p.smiling)
        if smiling:
            parts.append(f"{smiling} smiling" if len(persons) > 1 else "smiling")
        colors = [p.upper_clothing_color for p in persons if p.upper_clothing_color]
        if colors:
            parts.append("wearing " + ", ".join(f"{c} on top" if c != "multicolor" else "multicolored clothes on top" for c in colors))
    flags = [name for name, on in (("blurry", quality.blurry), ("underexposed", quality.underexposed), ("overexposed", quality.overexposed)) if on]
    if flags:
        parts.append(" and ".join(flags) + " photo")
    return "; ".join(parts) + "."
