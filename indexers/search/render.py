"""Search results for a terminal (rich tables) or for programs (JSON lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Optional

from humantag.indexers.fields import FieldSpec, all_fields
from humantag.indexers.search.model import SearchResponse

CAPTION_CHARS = 70
PERSON_ATTRIBUTES = ("age_group", "expression", "eyewear", "headwear", "upper_clothing_color", "upper_clothing")
PERSONS_SHOWN = 3


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def jsonl_lines(response: SearchResponse, interpreted: Optional[list[str]] = None) -> Iterator[str]:
    """One line per hit ({"id", "uri", "score", "document"}), then one summary line
    ({"total", "facets", "next_cursor", "took_ms"}, plus "interpreted" for a plain-language query and
    "not_produced" when nothing matched because of a field no row has): hit lines have a "uri", the summary has not."""
    for hit in response.hits:
        yield _dumps(hit.model_dump(mode="json"))
    summary: dict[str, Any] = {
        "total": response.total,
        "facets": {name: [b.model_dump(mode="json") for b in buckets] for name, buckets in response.facets.items()},
        "next_cursor": response.next_cursor,
        "took_ms": round(response.took_ms, 1),
    }
    if interpreted is not None:
        summary["interpreted"] = interpreted
    if response.not_produced:
        summary["not_produced"] = [{**n.model_dump(mode="json"), "message": n.message} for n in response.not_produced]
    yield _dumps(summary)


def where_arguments(where: list[str]) -> str:
    """`--where 'people_count=2' --where 'person.eyewear=sunglasses'`, ready to paste into a shell."""
    import shlex

    return " ".join(f"--where {shlex.quote(w)}" for w in where)


def print_interpretation(console: Any, interpretation: Any) -> None:
    """What a plain-language query was understood as, as the --where arguments that run it."""
    where = interpretation.where
    text = where_arguments(where) if where else "(nothing it knows: every image)"
    console.print(f"interpreted as: {text}", soft_wrap=True, highlight=False, markup=False)
    if interpretation.ignored:
        console.print(f"not understood (ignored): {' '.join(interpretation.ignored)}", soft_wrap=True,
                      highlight=False, markup=False)


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _person(person: dict[str, Any]) -> str:
    parts = [str(person[a]) for a in PERSON_ATTRIBUTES if person.get(a) not in (None, "none")]
    if person.get("accessories"):
        parts.append("+" + "+".join(person["accessories"]))
    return " ".join(parts) or "?"


def _persons(document: dict[str, Any]) -> str:
    persons = document.get("persons") or []
    lines = [_person(p) for p in persons[:PERSONS_SHOWN]]
    if len(persons) > PERSONS_SHOWN:
        lines.append(f"… {len(persons) - PERSONS_SHOWN} more")
    return "\n".join(lines)


def _scene(document: dict[str, Any]) -> str:
    scene = document.get("scene") or {}
    return " ".join(str(scene[k]) for k in ("environment", "setting") if scene.get(k))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def hits_table(response: SearchResponse) -> Any:
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold", expand=False)
    table.add_column("uri", overflow="fold")
    table.add_column("people", justify="right")
    table.add_column("scene")
    table.add_column("persons")
    table.add_column("caption")
    for hit in response.hits:
        doc = hit.document
        if doc.get("status") == "error":
            caption = f"[red]error {_escape(str(doc.get('error_kind') or ''))}[/]: {_escape(_truncate(str(doc.get('error_message') or ''), CAPTION_CHARS))}"
        else:
            caption = _escape(_truncate(str(doc.get("caption") or ""), CAPTION_CHARS))
        if doc.get("deleted_at"):
            caption = f"[yellow]deleted {doc['deleted_at'][:10]}[/] " + caption
        people = doc.get("people_count")
        table.add_row(_escape(hit.uri), "" if people is None else str(people), _escape(_scene(doc)),
                      _escape(_persons(doc)), caption)
    return table


def facets_table(response: SearchResponse) -> Any:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("facet", style="cyan", no_wrap=True)
    table.add_column("images by value")
    for name, buckets in response.facets.items():
        values = ", ".join(f"{_escape(_value(b.value))} ({b.count:,})" for b in buckets) or "[dim]-[/]"
        table.add_row(_escape(name), values)
    return table


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_response(console: Any, response: SearchResponse, source: str) -> None:
    """Total, hits, facets and the flag for the next page."""
    count = f"{response.total:,} image{'s' if response.total != 1 else ''} match{'es' if response.total == 1 else ''}"
    console.print(f"[bold]{count}[/]  [dim]({_escape(source)}, {response.took_ms:.0f} ms)[/]", highlight=False)
    for note in response.not_produced:
        console.print(note.message, soft_wrap=True, highlight=False, markup=False)
    if response.hits:
        console.print(hits_table(response))
    if response.facets:
        console.print(facets_table(response))
    if response.next_cursor:
        # Printed whole (never wrapped): copy it into the next command.
        console.print(f"next page: --after {response.next_cursor}", soft_wrap=True, highlight=False, markup=False)


def field_record(spec: FieldSpec) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "values": list(spec.values), "facet": spec.facetable,
            "person": spec.nested, "list": spec.is_list}


def fields_jsonl() -> Iterator[str]:
    for spec in all_fields().values():
        yield _dumps(field_record(spec))


def fields_table() -> Any:
    from rich.table import Table

    table = Table(header_style="bold")
    table.add_column("field", style="cyan", no_wrap=True)
    table.add_column("kind")
    table.add_column("operators")
    table.add_column("values")
    table.add_column("facet")
    for spec in all_fields().values():
        if spec.kind == "text":
            ops = "~"
        elif spec.kind in ("int", "float", "date"):
            ops = "= != >= <= > <"
        else:
            ops = "= !="
        values = ", ".join(spec.values) if spec.values else ("true, false" if spec.kind == "bool" else "")
        kind = spec.kind + (" list" if spec.is_list else "") + (" (per person)" if spec.nested else "")
        table.add_row(spec.name, kind, ops, values, "yes" if spec.facetable else "")
    return table
