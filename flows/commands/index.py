"""`humantag index OUT [--rebuild]`: Parquet labels → OpenSearch, through the `reindex` Prefect flow."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Optional

import typer

from humantag.flows.commands import opensearch_options as os_opts
from humantag.flows.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("index", no_args_is_help=True)(index_command)


class _DocumentCounter:
    """Progress listener for indexing: documents acknowledged so far, and their rate."""

    def __init__(self, console: Any) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(), TextColumn("[bold]indexing[/] {task.completed:,.0f} documents"),
                                  TimeElapsedColumn(), console=console)
        self._lock = threading.Lock()
        self._task: Any = None

    def start(self, total_images: int, already_done: int) -> None:
        pass

    def advance(self, images: int, errors: int) -> None:
        with self._lock:
            if self._task is None:
                self._progress.start()
                self._task = self._progress.add_task("index", total=None)
            self._progress.update(self._task, advance=images)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()


@os_opts.with_opensearch_flags()
def index_command(
    out: str = typer.Argument(..., help="The labeling output (folder or s3:// prefix) whose labels/ to index.", show_default=False),
    rebuild: bool = typer.Option(False, "--rebuild", help="Fill a new physical index from every label file, then move the read and write aliases to it in one atomic step. Searches keep working on the old index meanwhile; rerun to resume an interrupted rebuild."),
    opensearch: os_opts.OpenSearchFlags = os_opts.OpenSearchFlags(),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 endpoint, when OUT is on an S3-compatible server."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress display."),
    json_report: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Index the labels under OUT into OpenSearch: what is not indexed yet, or everything with --rebuild.

    Resumable: each label file is marked once OpenSearch acknowledged all its
    documents (OUT/_index/<index>/), so an interrupted run continues where it
    stopped. Markers belong to one index instance (its UUID): an index deleted and
    recreated is filled again. The documents per shard are checked against the
    markers; shards that disagree are reindexed. Documents OpenSearch rejects are
    listed in OUT/_runs/<run>/index_errors/.
    """
    from rich.console import Console
    from rich.table import Table

    from humantag.flows import progress
    from humantag.flows.indexing import reindex
    from humantag.workers.storage import StorageOptions, filesystem

    settings = opensearch.settings()
    if settings is None:
        raise UserError("no OpenSearch configured: pass --opensearch-url or set OPENSEARCH_URL")
    storage = StorageOptions.from_env(endpoint_url=endpoint_url)
    fs, root = filesystem(out, storage)
    if not fs.exists(f"{root}/labels"):
        raise UserError(f"no labels under {out} (expected {out.rstrip('/')}/labels/*.parquet)")

    console = Console(stderr=True)
    if not no_progress:
        progress.set_listener(_DocumentCounter(console))
    try:
        report = reindex(out.rstrip("/"), settings, storage, rebuild)
    finally:
        progress.listener().finish()
        progress.set_listener(None)
    if json_report:
        sys.stdout.write(json.dumps(report.model_dump(mode="json")) + "\n")
    else:
        table = Table(title=f"{'rebuild' if rebuild else 'index'} {out} -> {settings.safe_urls()}", show_header=False)
        table.add_row("index", report.index)
        table.add_row("documents indexed", f"{report.documents_indexed:,}")
        table.add_row("documents deleted", f"{report.documents_deleted:,}")
        table.add_row("documents rejected", f"{report.documents_failed:,}")
        table.add_row("documents superseded", f"{report.documents_superseded:,}")
        table.add_row("shards indexed / failed / pending", f"{report.shards_indexed} / {report.shards_failed} / {report.shards_pending}")
        if not rebuild:
            table.add_row("shards verified (documents = marker)", f"{report.shards_verified}")
            table.add_row("shards whose documents disagreed", f"{len(report.count_mismatches)} (reindexed)"
                          if report.count_mismatches else "0")
        for path in report.error_reports[:5]:
            table.add_row("error report", path)
        Console().print(table)
    if not report.ok:
        raise UserError(report.error or f"{report.documents_failed} document(s) rejected; see the error reports; rerun to retry")
