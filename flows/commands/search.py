"""`humantag search [DEST]`: find images by the people in them, from OpenSearch or straight from the Parquet."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any, Optional

import typer

from humantag.flows.commands import opensearch_options as os_opts
from humantag.flows.errors import UserError


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


class Engine(str, Enum):
    auto = "auto"
    opensearch = "opensearch"
    parquet = "parquet"


HELP = """Find images by the people in them: attribute filters, caption words, facet counts.

Answers from OpenSearch when one is configured (--opensearch-url or OPENSEARCH_URL), else straight
from the Parquet files under DEST with DuckDB (nothing to run). --fields lists what can be searched.

\b
Filters (--where, repeatable, all must hold):  FIELD OP VALUE
  =  !=             people_count=2   scene.setting!=beach   person.smiling=true
  a,b (any of)      person.eyewear=sunglasses,glasses   (with != : none of them)
  >= <= > <         people_count>=2   labeled_at>=2024-05-01
  ~  (words)        caption~red dress   person.action~running   (every word, any order)
\b
Every person.* filter must hold for the SAME person: --where person.eyewear=sunglasses
--where person.expression=smiling finds a smiling person in sunglasses, not one person in
sunglasses next to another who smiles.
\b
Plain words (QUERY) become filters, printed so you can check and correct them:
  humantag search out/ "two people, one in sunglasses, on a beach"
  interpreted as: --where 'people_count=2' --where 'person.eyewear=sunglasses' --where 'scene.setting=beach'
With OpenSearch configured, DEST is not needed: humantag search "a child in a red jacket".
Counts ("two people", "a crowd", "nobody"), schema values and synonyms ("shades", "kid", "crimson"),
one person per description ("a child in a red jacket"; "person2.*" is another person), scene
words, negation ("without glasses", "no face visible"); other words must be in the caption.
\b
Examples:
  humantag search out/ --where 'people_count>=2' --where 'person.eyewear=sunglasses' \\
      --where 'scene.setting=beach' --text 'red dress'
  humantag search out/ --where 'status=error' --facet error_kind --limit 0
  humantag search out/ --text beach --format jsonl --after <next_cursor of the last page>
\b
Pages: at most --limit hits; the last line says --after <cursor> for the next page.
--format jsonl prints one JSON object per hit, then one summary line
{"total", "facets", "next_cursor", "took_ms"} (hit lines have a "uri", the summary has not).
"""


def register(app: typer.Typer) -> None:
    app.command("search", help=HELP)(search)


@os_opts.with_opensearch_flags()
def search(
    dest: Optional[str] = typer.Argument(None, envvar="HUMANTAG_OUT", show_default=False,
                                         help="The --out of a run (folder or s3:// prefix): searched with DuckDB when no OpenSearch is configured."),
    query: Optional[str] = typer.Argument(None, show_default=False,
                                          help="What to find in plain words, e.g. \"two people, one in sunglasses, on a beach\": turned into --where filters, which are printed."),
    ask: Optional[str] = typer.Option(None, "--query", "-q", show_default=False,
                                      help="The same as QUERY (handy with OpenSearch and no DEST)."),
    where: list[str] = typer.Option([], "--where", "-w", show_default=False,
                                    help="Filter FIELD OP VALUE (repeatable, all must hold), e.g. 'people_count>=2', 'person.eyewear=sunglasses,glasses', 'caption~red dress'."),
    text: Optional[str] = typer.Option(None, "--text", "-t", show_default=False,
                                       help="Words that must all appear in the caption (any order, case-insensitive)."),
    facet: list[str] = typer.Option([], "--facet", "-f", show_default=False,
                                    help="Count matching images by this field's values (repeatable). Default: the usual facets."),
    no_facets: bool = typer.Option(False, "--no-facets", help="No facet counts (faster)."),
    facet_size: int = typer.Option(10, "--facet-size", min=1, max=200, help="Values shown per facet."),
    limit: int = typer.Option(20, "--limit", "-n", min=0, max=1000, help="Hits per page (0: only the total and facets)."),
    after: Optional[str] = typer.Option(None, "--after", show_default=False, help="Cursor printed by the previous page: the next page."),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table for people, jsonl for programs."),
    include_deleted: bool = typer.Option(False, "--include-deleted",
                                         help="Also rows of objects deleted from the source (Parquet only: OpenSearch drops them)."),
    fields: bool = typer.Option(False, "--fields", help="List the searchable fields, their operators and values, and exit."),
    engine: Engine = typer.Option(Engine.auto, "--engine", help="auto: OpenSearch when configured, else DuckDB over DEST; or force one."),
    opensearch: os_opts.OpenSearchFlags = os_opts.OpenSearchFlags(),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", envvar="AWS_ENDPOINT_URL", show_default=False,
                                               help="S3 endpoint, when DEST is on an S3-compatible server."),
    region: Optional[str] = typer.Option(None, "--region", envvar="AWS_REGION", show_default=False, help="S3 region of DEST."),
) -> None:
    from pydantic import ValidationError
    from rich.console import Console

    from humantag.indexers.search import render
    from humantag.indexers.search.model import QueryError, SearchRequest, SearchUnavailable, check_facets, parse_where

    if fields:
        _print_lines(render.fields_jsonl()) if output_format == OutputFormat.jsonl else Console().print(render.fields_table())
        return

    from humantag.indexers.search.plain import interpret

    if query is None and dest and engine != Engine.parquet and not _is_path(dest) and opensearch.settings() is not None:
        dest, query = None, dest  # OpenSearch needs no DEST: `humantag search "two people"` is a query
    plain = " ".join(q for q in (query, ask) if q)
    try:
        interpretation = interpret(plain) if plain else None
        filters = [parse_where(expression) for expression in where]
        if interpretation is not None:
            filters = interpretation.filters + filters
        facets = [] if no_facets else check_facets(list(dict.fromkeys(facet))) if facet else None
        request = SearchRequest(filters=filters, text=text or None, size=limit, after=after, facet_size=facet_size,
                                include_deleted=include_deleted, **({} if facets is None else {"facets": facets}))
    except QueryError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where_ = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{where_}: {first['msg']}") from None

    backend = _open(dest, engine, opensearch, endpoint_url, region)
    try:
        response = backend.search(request)
        source = backend.describe()
    except (QueryError, SearchUnavailable) as exc:
        raise UserError(str(exc)) from None
    finally:
        backend.close()

    understood = interpretation.where if interpretation is not None else None
    if output_format == OutputFormat.jsonl:
        _print_lines(render.jsonl_lines(response, understood))
    else:
        console = Console()
        if interpretation is not None:
            render.print_interpretation(console, interpretation)
        render.print_response(console, response, source)


def _open(dest: Optional[str], engine: Engine, opensearch: os_opts.OpenSearchFlags, endpoint_url: Optional[str],
          region: Optional[str]) -> Any:
    from humantag.indexers.search.backends import open_backend
    from humantag.workers.storage import StorageOptions

    settings = None
    if engine != Engine.parquet:
        settings = opensearch.settings()
    if engine == Engine.opensearch and settings is None:
        raise UserError("--engine opensearch: no OpenSearch configured (--opensearch-url or OPENSEARCH_URL)")
    if engine == Engine.parquet and not dest:
        raise UserError("--engine parquet needs DEST (the --out of a run)")
    from humantag.indexers.search.model import SearchUnavailable

    storage = StorageOptions.from_env(endpoint_url=endpoint_url, region=region) if dest else None
    try:
        return open_backend(dest, settings, storage)
    except SearchUnavailable as exc:
        raise UserError(str(exc)) from None


def _is_path(text: str) -> bool:
    import os

    return "://" in text or "/" in text or os.path.exists(text)


def _print_lines(lines: Any) -> None:
    write = sys.stdout.write
    for line in lines:
        write(line + "\n")
    sys.stdout.flush()
