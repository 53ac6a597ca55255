"""What `humantag run` and `backfill` do: check, pick the labeler, fit the cluster, run the flow, report."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any, Optional


from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from humantag.flows import progress
from humantag.flows.config import RunConfig
from humantag.flows.errors import UserError
from humantag.flows.estimates import estimate_row
from humantag.flows.commands.run import RunOutput
from humantag.flows.listing import iter_source
from humantag.flows.resources import cluster_nodes, fit_pool, local_node
from humantag.workers.labelers import create_labeler
from humantag.workers.labelers.base import Placement
from humantag.workers.storage import StorageAccessDenied, classify_storage_error, filesystem, write_bytes_atomic

log = logging.getLogger("humantag.run")
# Labels committed, search index behind: distinct from user errors (2) so schedulers can alert on it.
INDEX_PENDING_EXIT_CODE = 3


def check_source(config: RunConfig) -> None:
    """Fail fast, in one line, on an unreachable or empty source."""
    for _ in iter_source(config.source, config.storage):
        return
    raise UserError(
        f"no images found under {config.source.url} (extensions {', '.join(config.source.extensions)}"
        + (f", include {list(config.source.include)}" if config.source.include else "")
        + (f", exclude {list(config.source.exclude)}" if config.source.exclude else "")
        + ")"
    )


def check_destination(config: RunConfig) -> None:
    try:
        fs, root = filesystem(config.dest, config.storage)
        probe = f"{root}/_runs/.write-probe"
        write_bytes_atomic(fs, probe, b"ok")
        fs.rm(probe)
    except Exception as exc:  # noqa: BLE001 - reported as one line
        mapped = classify_storage_error(exc)
        reason = str(mapped) if isinstance(mapped, StorageAccessDenied) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"cannot write to {config.dest}: {reason}") from exc


class RichProgress:
    """The terminal progress bar (images done/total, images/s, errors) and the flow run's link."""

    def __init__(self, console: Console, show_bar: bool = True) -> None:
        self._console = console
        self._show_bar = show_bar
        self._progress = Progress(
            TextColumn("[bold]labeling"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} img/s"),
            TextColumn("[red]{task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._lock = threading.Lock()
        self._task: Any = None
        self._started = 0.0
        self._done_now = 0
        self._errors = 0

    def run_started(self, run_id: str, flow_run_url: Optional[str]) -> None:
        if flow_run_url:
            self._console.print(f"humantag: run {run_id}: {flow_run_url}", highlight=False, soft_wrap=True)

    def start(self, total_images: int, already_done: int) -> None:
        self._started = time.perf_counter()
        if not self._show_bar:
            self._progress.disable = True
        self._progress.start()
        self._task = self._progress.add_task("label", total=total_images, completed=already_done, rate=0.0, errors=0)

    def advance(self, images: int, errors: int) -> None:
        with self._lock:
            self._done_now += images
            self._errors += errors
            rate = self._done_now / max(time.perf_counter() - self._started, 1e-6)
            self._progress.update(self._task, advance=images, rate=rate, errors=self._errors)

    def finish(self) -> None:
        self._progress.stop()


def prepare_run(config: RunConfig, dry_run: bool = False) -> tuple[RunConfig, str, Optional[Placement]]:
    """Everything that can fail in seconds, before any work: source, destination, labeler, cluster fit.

    A local Ray is started only when the labeler must be chosen for the cluster (the flow starts it
    when there are shards to label): a pool that cannot fit this machine's CPUs fails before it.
    """
    check_source(config)  # cheap checks first: a typo in a path should not wait for Ray to start
    if not dry_run:
        check_destination(config)
    if config.labeler and not (config.ray_address or os.environ.get("RAY_ADDRESS")):
        needs = create_labeler(config.labeler, config.labeler_options).default_placement()
        if config.pool.num_gpus if config.pool.num_gpus is not None else needs.num_gpus:
            return config, "chosen with --labeler", None  # GPUs: known once Ray is up; the flow checks them
        return config, "chosen with --labeler", fit_pool(config.pool, needs, local_node())
    from humantag.flows.label_archive import resolve_labeler  # Prefect and Ray: imported once the cheap checks passed
    from humantag.flows.ray_runtime import ensure_ray

    ensure_ray(config.ray_address)
    config, why = resolve_labeler(config)
    labeler = create_labeler(config.labeler, config.labeler_options)
    return config, why, fit_pool(config.pool, labeler.default_placement(), cluster_nodes())


def execute_run(config: RunConfig, output: RunOutput) -> None:
    console = Console(stderr=True)
    config, why, placement = prepare_run(config, output.dry_run)
    log.info("labeler %s (%s)", config.labeler, why)
    if output.dry_run:
        print_dry_run(config, output.gpu_rate, Console())
        return
    console.print(
        f"humantag: labeling {config.source.url} -> {config.dest} with [bold]{config.labeler}[/] ({why}); "
        + (f"{config.pool.replicas} replica(s) × {placement.num_cpus:g} CPU" if placement else f"{config.pool.replicas} replica(s)")
        + (f" × {placement.num_gpus:g} GPU" if placement and placement.num_gpus else ""), highlight=False, soft_wrap=True)

    from humantag.flows.interrupts import run_interruptible
    from humantag.flows.label_archive import run_label_archive

    listener = RichProgress(console, output.progress)
    progress.set_listener(listener)
    try:
        summary = run_interruptible(lambda: run_label_archive(config))
    finally:
        progress.set_listener(None)
    if output.json_summary:
        sys.stdout.write(json.dumps(summary.model_dump(mode="json")) + "\n")
    else:
        print_summary(summary, Console())
    report = summary.index
    if report is not None and not report.ok:
        reason = report.error or f"{report.documents_failed} document(s) rejected, see {', '.join(report.error_reports[:3])}"
        console.print(
            f"humantag: warning: labels are committed, but {report.shards_pending + report.shards_failed} shard(s) "
            f"are not indexed: {reason}. Rerun, or run `humantag index {config.dest}`, to index them.",
            highlight=False, soft_wrap=True,
        )
        raise SystemExit(INDEX_PENDING_EXIT_CODE)


def print_dry_run(config: RunConfig, gpu_rate: Optional[float], console: Console) -> None:
    """Plan into a scratch folder (DEST is not written) and say what a run would do."""
    import tempfile

    from humantag.flows.label_archive import plan_run

    labeler = create_labeler(config.labeler, config.labeler_options)  # options only: no weights load
    with tempfile.TemporaryDirectory(prefix="humantag-dry-run-") as scratch:
        plan = plan_run(config, config.resolved_run_id(), labeler, plan_root=scratch)
    counts = plan.counts
    table = Table(title=f"plan for {config.source.url} -> {config.dest} (dry run: nothing written)", show_header=False)
    table.add_row("objects listed", f"{counts.listed:,}")
    table.add_row("to label", f"{plan.total_objects:,} ({_gib(plan.total_bytes)})")
    if config.plans_against_ledger:
        table.add_row("  new / changed / retried / stale", f"{counts.new:,} / {counts.changed:,} / {counts.retry:,} / {counts.stale:,}")
        table.add_row("already labeled (current version)", f"{counts.unchanged:,}")
        if counts.deleted:
            table.add_row("deleted from the source", f"{counts.deleted:,}")
    table.add_row("shards", f"{len(plan.shards):,} of up to {config.shard_size}")
    table.add_row(*estimate_row(labeler, plan.total_objects, gpu_rate))
    console.print(table)


def _gib(size: int) -> str:
    return f"{size / 2**30:,.2f} GiB"


def print_summary(summary: Any, console: Console) -> None:
    table = Table(title=f"run {summary.run_id}", show_header=False)
    table.add_row("output", f"{summary.dest}/labels/ (Parquet, one file per shard)")
    table.add_row("summary", f"{summary.dest}/_runs/{summary.run_id}/summary.json")
    table.add_row("labeler", f"{summary.labeler} ({', '.join(summary.labeler_versions)})")
    table.add_row("images", f"{summary.total_images} ({summary.ok} ok, {summary.total_images - summary.ok} errors)")
    if summary.plan.get("skipped"):
        table.add_row("skipped by the listing", f"{summary.plan['skipped']} (names that are not UTF-8; see the log)")
    for kind, count in sorted(summary.errors.items()):
        table.add_row(f"  error: {kind}", str(count))
    if summary.gated:
        table.add_row("skipped by the person gate", str(summary.gated))
    table.add_row(
        "shards",
        f"{summary.shards_total} ({summary.shards_done_now} labeled now, {summary.shards_done_before} already done)",
    )
    table.add_row("this run", f"{summary.images_this_run} images in {summary.labeling_s:.1f}s ({summary.images_per_s:.1f} img/s); "
                  f"start-up {summary.startup_s:.1f}s")
    if summary.flow_run_url:
        table.add_row("Prefect", summary.flow_run_url)
    if summary.index is not None:
        idx = summary.index
        table.add_row("OpenSearch", f"{idx.index}: {idx.documents_indexed} indexed, {idx.documents_deleted} deleted, "
                      f"{idx.documents_failed} rejected, {idx.shards_pending} shard(s) pending")
    console.print(table)
