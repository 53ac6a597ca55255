"""What `humantag run` does: validate, pick the labeler, run the flow with a progress bar, report."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flows import progress
from flows.config import PoolConfig, RunConfig
from flows.errors import UserError
from flows.estimates import estimate_row
from flows.listing import SourceSpec, iter_source
from workers.labelers import LabelerOptions, is_known_labeler, labeler_names
from workers.loader import DecodeOptions
from workers.storage import StorageAccessDenied, StorageOptions, classify_storage_error, filesystem, write_bytes_atomic

log = logging.getLogger("humantag.run")
# Labels committed, search index behind: distinct from user errors (2) so schedulers can alert on it.
INDEX_PENDING_EXIT_CODE = 3


@dataclass
class RunRequest:
    source: str
    out: str
    labeler: Optional[str] = None
    shard_size: int = 256
    replicas: int = 1
    num_cpus: Optional[float] = None
    num_gpus: Optional[float] = None
    batch_size: int = 16
    shard_concurrency: int = 2
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    run_id: Optional[str] = None
    model: Optional[str] = None
    labeler_extra: Optional[dict[str, Any]] = None
    sensitive_attributes: bool = False
    max_pixels: int = 89_478_485
    endpoint_url: Optional[str] = None
    aws_access_key_id: Optional[str] = None
    aws_secret_access_key: Optional[str] = None
    region: Optional[str] = None
    ray_address: Optional[str] = None
    show_progress: bool = True
    json_summary: bool = False
    incremental: bool = False
    relabel_stale: bool = False
    track_deletions: bool = True
    listing_workers: int = 1
    backfill: bool = False
    dry_run: bool = False
    gpu_rate: Optional[float] = None  # None: the labeler's own figure
    opensearch: Optional[Any] = None  # indexers.opensearch.settings.OpenSearchSettings


def choose_labeler(requested: Optional[str], ray_address: Optional[str]) -> tuple[str, str]:
    """(name, why). Explicit wins; otherwise HumanVLM behind the gate on GPU clusters, else cpu."""
    if requested:
        return requested, "chosen with --labeler"
    from workers.labelers.default import choose_default_labeler
    from flows.ray_runtime import ensure_ray

    ensure_ray(ray_address)
    return choose_default_labeler()


def build_config(req: RunRequest, labeler: str) -> RunConfig:
    storage = StorageOptions.from_env(
        endpoint_url=req.endpoint_url, key=req.aws_access_key_id, secret=req.aws_secret_access_key, region=req.region
    )
    return RunConfig(
        source=SourceSpec(url=req.source, include=req.include, exclude=req.exclude),
        dest=req.out.rstrip("/"),
        labeler=labeler,
        labeler_options=LabelerOptions(
            batch_size=req.batch_size,
            sensitive_attributes=req.sensitive_attributes,
            model=req.model,
            extra=req.labeler_extra or {},
        ),
        shard_size=req.shard_size,
        shard_concurrency=req.shard_concurrency,
        pool=PoolConfig(replicas=req.replicas, num_cpus=req.num_cpus, num_gpus=req.num_gpus),
        decode=DecodeOptions(max_pixels=req.max_pixels),
        storage=storage,
        run_id=req.run_id,
        ray_address=req.ray_address,
        incremental=req.incremental,
        backfill=req.backfill,
        relabel_stale=req.relabel_stale,
        track_deletions=req.track_deletions,
        listing_workers=req.listing_workers,
        opensearch=req.opensearch,
    )


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
    """The terminal progress bar: images done/total, images/s, errors."""

    def __init__(self, console: Console) -> None:
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

    def start(self, total_images: int, already_done: int) -> None:
        self._started = time.perf_counter()
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


def execute_run(req: RunRequest) -> None:
    console = Console(stderr=True)
    if req.labeler and not is_known_labeler(req.labeler):
        raise UserError(f"unknown labeler {req.labeler!r}; choose one of: {', '.join(labeler_names())} (or module:Class)")
    # Cheap checks first: a typo in a path should not wait for Ray to start.
    provisional = build_config(req, req.labeler or "image-facts")
    check_source(provisional)
    if not req.dry_run:
        check_destination(provisional)
    labeler, why = choose_labeler(req.labeler, req.ray_address)
    config = build_config(req, labeler)
    log.info("labeler %s (%s)", labeler, why)
    if not req.dry_run:
        console.print(f"humantag: labeling {config.source.url} -> {config.dest} with [bold]{labeler}[/] ({why}); run {config.resolved_run_id()}")

    if req.dry_run:
        print_dry_run(config, req.gpu_rate, Console())
        return

    from flows.label_archive import run_label_archive

    if req.show_progress:
        progress.set_listener(RichProgress(console))
    try:
        summary = run_label_archive(config)
    finally:
        progress.set_listener(None)
    if req.json_summary:
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

    from flows.label_archive import plan_run
    from workers.labelers import create_labeler

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
    table.add_row("this run", f"{summary.images_this_run} images in {summary.wall_s:.1f}s ({summary.images_per_s:.1f} img/s)")
    if summary.index is not None:
        idx = summary.index
        table.add_row("OpenSearch", f"{idx.index}: {idx.documents_indexed} indexed, {idx.documents_deleted} deleted, "
                      f"{idx.documents_failed} rejected, {idx.shards_pending} shard(s) pending")
    console.print(table)
