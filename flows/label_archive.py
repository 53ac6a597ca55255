"""The `label_archive` Prefect flow: plan, label every unfinished shard, summarise.

One Prefect task per shard. Tasks are retried only for infrastructure
failures (storage unreachable, a Ray actor or worker lost); a bad image never
fails a task, it is an error row. Prefect runs without a server unless
PREFECT_API_URL is set; Ray starts locally unless RAY_ADDRESS is set.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextvars
import json
import logging
import threading
import time
from typing import Any, Optional

import ray
from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from humantag.flows import progress
from humantag.flows.config import RunConfig, RunMode, run_options
from humantag.flows.errors import ShardsFailed, UserError
from humantag.flows.listing import ListingReport, iter_source
from humantag.flows.options import fill_secrets_from_env
from humantag.flows.resources import cluster_nodes, fit_pool, pending_demand
from humantag.flows.incremental import CurrentVersions, build_full_plan, build_incremental_plan, read_deleted
from humantag.flows.indexing import ShardIndexing
from humantag.flows.plan import RunPlan, ShardSpec, load_plan
from humantag.flows.run_ids import resolve_run_id
from humantag.flows.runtime import send_logs_to_prefect, start_temporary_prefect_server
from humantag.flows.ray_runtime import ensure_ray
from humantag.flows.shard_runner import ShardStats, load_markers, run_shard
from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.sync import IndexReport
from humantag.workers.actors import LabelerPool
from humantag.indexers.ledger import rewrite_shard
from humantag.workers.labelers import Labeler, create_labeler
from humantag.workers.loader import DecodeOptions
from humantag.workers.records import SCHEMA_VERSION, utcnow
from humantag.workers.storage import StorageUnavailable, classify_storage_error, filesystem, write_bytes_atomic

log = logging.getLogger(__name__)


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    source: str
    dest: str
    labeler: str
    mode: str
    labeler_versions: list[str]
    schema_version: str
    labeler_settings: dict[str, Any]
    total_images: int
    ok: int
    errors: dict[str, int]
    gated: int
    plan: dict[str, int]
    shards_total: int
    shards_done_before: int
    shards_done_now: int
    images_this_run: int
    replica_nodes: int = 0  # distinct Ray nodes the replicas ran on
    started_at: str
    startup_s: float  # flow start to the first shard submitted: Ray, labeler choice, listing, planning, replicas
    labeling_s: float  # first shard submitted to the last one done
    wall_s: float
    images_per_s: float  # images of this run per second of labeling
    finished_at: str
    flow_run_url: Optional[str] = None
    index: Optional[IndexReport] = None  # set when OpenSearch is configured


def is_infrastructure_error(exc: BaseException | None) -> bool:
    """Retry what the infrastructure broke; let a programming error fail once, loudly."""
    infra = (
        StorageUnavailable,
        ray.exceptions.RayActorError,
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.ObjectLostError,
        ray.exceptions.NodeDiedError,
        ConnectionError,
        TimeoutError,
    )
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, infra) or _storage_client_unreachable(exc):
            return True
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, infra):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _storage_client_unreachable(exc: BaseException) -> bool:
    """A storage client's own connection error (botocore, aiohttp...) that no layer of ours wrapped."""
    clients = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3")
    return type(exc).__module__.startswith(clients) and isinstance(classify_storage_error(exc), StorageUnavailable)


def _retry_condition(_task: Any, _task_run: Any, state: Any) -> bool:
    if progress.state.stop.is_set():  # interrupted: the pool is gone on purpose
        return False
    exc = state.data if isinstance(state.data, BaseException) else None
    retry = is_infrastructure_error(exc)
    # Not retried: the run's final error says it, once.
    log.log(logging.WARNING if retry else logging.INFO, "shard task failed (%r): %s", exc, "retrying" if retry else "not retrying")
    return retry


@task(name="label_shard", task_run_name="shard-{shard.shard_id}", cache_policy=NO_CACHE, retry_condition_fn=_retry_condition, retry_delay_seconds=2)
def label_shard(shard: ShardSpec, pool: LabelerPool, config: RunConfig, decode: DecodeOptions, run_id: str,
                indexing: Optional[ShardIndexing] = None) -> ShardStats:
    fs, root = filesystem(config.dest, config.storage)
    layout = OutputLayout(root)
    stats = run_shard(shard, pool, config, decode, fs, layout, run_id, on_batch=progress.batch_done)
    progress.state.shard_done()
    log.info("shard %s: %d images, %d errors, %.1fs", shard.shard_id, stats.images, stats.images - stats.ok, stats.wall_s)
    if indexing is not None:  # after the Parquet commit and the marker: the labels are safe whatever happens here
        indexing.index_shard(shard.shard_id)
    return stats


def current_versions(labeler: Labeler) -> CurrentVersions:
    """What rows must carry to count as current: from the labeler's options, no weights loaded."""
    try:
        return CurrentVersions(labeler.current_identities())
    except (FileNotFoundError, PermissionError) as exc:  # weights missing here, hub offline, access denied
        raise UserError(f"cannot tell which version labeler {labeler.name} is: {exc}") from exc


def plan_run(config: RunConfig, run_id: str, labeler: Labeler | None = None, plan_root: str | None = None) -> RunPlan:
    """Plan (or reload the frozen plan of) `run_id`. `plan_root`: write the plan elsewhere (dry runs)."""
    dest_fs, dest_root = filesystem(config.dest, config.storage)
    fs, root = (filesystem(plan_root) if plan_root else (dest_fs, dest_root))
    layout = OutputLayout(root)
    existing = load_plan(fs, layout, run_id)
    if existing is not None:
        log.info("resuming run %s: plan of %d objects in %d shards", run_id, existing.total_objects, len(existing.shards))
        return existing
    listing = ListingReport()
    objects = iter_source(config.source, config.storage, workers=config.listing_workers, report=listing)
    if config.plans_against_ledger:
        labeler = labeler or create_labeler(config.labeler, config.labeler_options)
        plan = build_incremental_plan(
            objects, config.source, fs, layout, run_id, config.shard_size, current_versions(labeler),
            relabel_stale=config.relabel_stale,
            track_deletions=config.track_deletions and config.mode is RunMode.incremental,
            ledger_at=(dest_fs, OutputLayout(dest_root)), listing=listing,
        )
        if plan.counts.listed == 0:
            raise UserError(f"no images found under {config.source.url}; refusing to mark every labeled object deleted")
    else:
        plan = build_full_plan(objects, config.source, fs, layout, run_id, config.shard_size,
                               ledger_at=(dest_fs, OutputLayout(dest_root)), listing=listing)
        if plan.total_objects == 0:
            raise UserError(f"no images found under {config.source.url} (extensions: {', '.join(config.source.extensions)})")
    log.info("planned run %s: %d objects to label in %d shards", run_id, plan.total_objects, len(plan.shards))
    return plan


def apply_deletions(config: RunConfig, run_id: str) -> int:
    """Mark the rows of objects gone from the source as deleted (idempotent)."""
    fs, root = filesystem(config.dest, config.storage)
    layout = OutputLayout(root)
    changed = 0
    for shard_id, uris in sorted(read_deleted(fs, layout, run_id).items()):
        changed += rewrite_shard(fs, layout, shard_id, delete_uris=uris)
    return changed


def summarise(config: RunConfig, run_id: str, plan: RunPlan, markers: dict[str, ShardStats], done_before: int,
              done_now: list[ShardStats], timing: "RunTiming", settings: dict[str, Any]) -> RunSummary:
    errors: collections.Counter[str] = collections.Counter()
    for stats in markers.values():
        errors.update(stats.errors)
    images_now = sum(s.images for s in done_now)
    return RunSummary(
        run_id=run_id,
        source=config.source.url,
        dest=config.dest,
        labeler=config.labeler or "",
        mode=config.mode.value,
        labeler_versions=sorted({s.labeler_version for s in markers.values()}),
        schema_version=SCHEMA_VERSION,
        labeler_settings=settings,
        total_images=sum(s.images for s in markers.values()),
        ok=sum(s.ok for s in markers.values()),
        errors=dict(errors),
        gated=sum(s.gated for s in markers.values()),
        plan=plan.counts.model_dump(),
        shards_total=len(plan.shards),
        shards_done_before=done_before,
        shards_done_now=len(done_now),
        images_this_run=images_now,
        started_at=timing.started_at,
        startup_s=timing.startup_s,
        labeling_s=timing.labeling_s,
        wall_s=timing.wall_s,
        images_per_s=images_now / timing.labeling_s if timing.labeling_s > 0 else 0.0,
        finished_at=utcnow().isoformat(),
    )


class RunTiming:
    """Where a run's wall time went: start-up (Ray, planning, replicas) and labeling."""

    def __init__(self) -> None:
        self.started_at = utcnow().isoformat()
        self._t0 = time.perf_counter()
        self._labeling_from: Optional[float] = None
        self._labeling_to: Optional[float] = None

    def labeling_started(self) -> None:
        self._labeling_from = time.perf_counter()

    def labeling_finished(self) -> None:
        self._labeling_to = time.perf_counter()

    @property
    def startup_s(self) -> float:
        return (self._labeling_from or time.perf_counter()) - self._t0

    @property
    def labeling_s(self) -> float:
        if self._labeling_from is None:
            return 0.0
        return (self._labeling_to or time.perf_counter()) - self._labeling_from

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self._t0


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the flow stopped submitting shards; committed ones stay."""


def resolve_labeler(config: RunConfig) -> tuple[RunConfig, str]:
    """The labeler named in the configuration, or the one chosen for this cluster (Ray must be up)."""
    if config.labeler:
        return config, "chosen with --labeler"
    from humantag.workers.labelers.default import choose_default_labeler

    chosen, why = choose_default_labeler()
    return config.model_copy(update={"labeler": chosen}), why


def run_tags(config: RunConfig) -> list[str]:
    """Prefect tags: find runs by bucket, labeler and mode."""
    source = config.source.url
    location = source.split("://", 1)[1].split("/", 1)[0] if "://" in source else source.rstrip("/").rsplit("/", 1)[-1]
    return ["humantag", f"source:{location}", f"labeler:{config.labeler}", f"mode:{config.mode.value}"]


def name_flow_run(run_id: str, tags: list[str]) -> Optional[str]:
    """Name the current flow run after the run id and tag it; its UI URL when a Prefect server is configured."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    flow_run_id = flow_run.get_id()
    if flow_run_id is None:
        return None
    progress.state.flow_run_id = str(flow_run_id)
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run_id)
        client.update_flow_run(flow_run_id, name=run_id, tags=sorted(set(current.tags) | set(tags)))
    from prefect.settings import PREFECT_API_URL

    return flow_run.get_flow_run_ui_url() if PREFECT_API_URL.value() else None  # unset: a temporary local server


@flow(name="label_archive", task_runner=ThreadPoolTaskRunner(), log_prints=False)
def label_archive(config: RunConfig) -> RunSummary:
    """Plan SOURCE against DEST, label every shard without a completion marker, write the run summary."""
    timing = RunTiming()
    send_logs_to_prefect()
    state = progress.state
    config = fill_secrets_from_env(config, run_options())  # a deployment stores none
    if config.labeler is None:  # chosen for the cluster it runs on
        ensure_ray(config.ray_address)
    config, why = resolve_labeler(config)
    log.info("labeler %s (%s)", config.labeler, why)
    labeler = create_labeler(config.labeler, config.labeler_options)
    fs, root = filesystem(config.dest, config.storage)
    layout = OutputLayout(root)
    run_id = resolve_run_id(config, fs, layout)
    flow_run_url = name_flow_run(run_id, run_tags(config))
    progress.listener().run_started(run_id, flow_run_url)
    indexing = ShardIndexing(config.opensearch, fs, layout, run_id) if config.opensearch else None
    plan = plan_run(config, run_id, labeler)
    markers = load_markers(fs, layout, run_id)
    todo = [s for s in plan.shards if s.shard_id not in markers]
    done_before = len(plan.shards) - len(todo)
    state.planned(len(plan.shards), done_before)
    progress.listener().start(plan.total_objects, sum(m.images for m in markers.values()))

    settings: dict[str, Any] = {"labeler": config.labeler, **labeler.run_info()}
    done_now: list[ShardStats] = []
    replica_nodes = 0
    if todo and not state.stop.is_set():
        ensure_ray(config.ray_address)
        placement = fit_pool(config.pool, labeler.default_placement(), cluster_nodes())  # before any replica starts
        decode = config.decode.model_copy(update={"max_side": config.decode.max_side or labeler.decode_max_side})
        log.info("starting %d %s replica(s) (%g CPU, %g GPU each)", config.pool.replicas, config.labeler,
                 placement.num_cpus, placement.num_gpus)
        with StallWatch(state, config.stall_warning_s):
            pool = LabelerPool(config.labeler, config.labeler_options, config.pool.replicas, placement)
            try:
                nodes = {d.pop("node_id", None) for d in pool.descriptions}
                replica_nodes = len(nodes - {None})
                settings.update(pool.descriptions[0])
                timing.labeling_started()
                done_now, failed = _label_shards(todo, pool, config, decode, run_id, indexing, state)
            finally:
                pool.shutdown()
                timing.labeling_finished()
        if state.stop.is_set():
            raise Interrupted(f"interrupted after {state.shards_done} of {state.shards_total} shards")
        if failed:
            causes = [(shard_id, exc if isinstance(exc, BaseException) else None) for shard_id, exc in failed]
            raise ShardsFailed(causes) from causes[0][1]
    progress.listener().finish()
    if plan.counts.deleted:
        log.info("marked %d row(s) deleted", apply_deletions(config, run_id))
    index_report = indexing.finish() if indexing is not None else None

    markers = load_markers(fs, layout, run_id)
    summary = summarise(config, run_id, plan, markers, done_before, done_now, timing, settings)
    summary.index = index_report
    summary.replica_nodes = replica_nodes
    summary.flow_run_url = flow_run_url
    record_summary(fs, layout, summary)
    publish_artifact(summary, done_now)
    return summary


def _label_shards(todo: list[ShardSpec], pool: LabelerPool, config: RunConfig, decode: DecodeOptions, run_id: str,
                  indexing: Optional[ShardIndexing], state: progress.RunState) -> tuple[list[ShardStats], list]:
    """Keep `shard_concurrency` shards feeding the pool (CLI and deployed runs alike); stop early on an interrupt."""
    task = label_shard.with_options(retries=config.shard_retries)
    waiting = collections.deque(todo)
    running: dict[Any, ShardSpec] = {}
    done: list[ShardStats] = []
    failed: list[tuple[str, Any]] = []
    while (waiting or running) and not state.stop.is_set():
        while waiting and len(running) < config.shard_concurrency:
            shard = waiting.popleft()
            running[task.submit(shard, pool, config, decode, run_id, indexing)] = shard
        by_inner = {f.wrapped_future: f for f in running}
        finished, _ = concurrent.futures.wait(by_inner, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in (by_inner[f] for f in finished):
            shard = running.pop(future)
            result = future.result(raise_on_failure=False)
            if isinstance(result, ShardStats):
                done.append(result)
            else:
                failed.append((shard.shard_id, result))
    return done, failed


def record_summary(fs: Any, layout: OutputLayout, summary: RunSummary) -> None:
    """Every attempt leaves a record; summary.json is the last attempt that labeled something (or the first)."""
    data = json.dumps(summary.model_dump(mode="json"), indent=1).encode()
    write_bytes_atomic(fs, layout.attempt_file(summary.run_id, summary.started_at), data)
    summary_file = layout.summary_file(summary.run_id)
    if summary.shards_done_now or not fs.exists(summary_file):
        write_bytes_atomic(fs, summary_file, data)


class StallWatch:
    """Logs what Ray has pending when no batch finished for a while (a pool that cannot be scheduled, a stuck read)."""

    def __init__(self, state: progress.RunState, after_s: float) -> None:
        self._state, self._after_s = state, after_s
        self._stop = threading.Event()
        context = contextvars.copy_context()  # the flow run's: its warnings reach the Prefect API too
        self._thread = threading.Thread(target=context.run, args=(self._watch,), name="humantag-stall-watch", daemon=True)

    def __enter__(self) -> "StallWatch":
        self._state.last_progress = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(min(self._after_s / 4, 5.0)):
            idle = time.monotonic() - self._state.last_progress
            if idle >= self._after_s and not self._state.stop.is_set():
                log.warning("no batch finished for %.0fs; Ray %s", idle, pending_demand())
                self._state.last_progress = time.monotonic()  # once per interval, not once per check


def publish_artifact(summary: RunSummary, done_now: list[ShardStats]) -> None:
    """The run's summary as a Prefect artifact, visible in the UI next to the flow run, with a row per shard."""
    from prefect.artifacts import create_markdown_artifact

    errors = "\n".join(f"| {kind} | {count} |" for kind, count in sorted(summary.errors.items())) or "| none | 0 |"
    plan = ", ".join(f"{k} {v}" for k, v in summary.plan.items() if v)
    markdown = (
        f"## humantag run `{summary.run_id}`\n\n"
        f"{summary.source} → {summary.dest}, labeler `{summary.labeler}` ({', '.join(summary.labeler_versions)})\n\n"
        f"| images | ok | errors | gated | this run | rate |\n|---|---|---|---|---|---|\n"
        f"| {summary.total_images} | {summary.ok} | {summary.total_images - summary.ok} | {summary.gated} "
        f"| {summary.images_this_run} in {summary.labeling_s:.1f}s (start-up {summary.startup_s:.1f}s) "
        f"| {summary.images_per_s:.1f} img/s |\n\n"
        f"Plan: {plan}\n\n| error kind | count |\n|---|---|\n{errors}\n"
    )
    if summary.index is not None:
        idx = summary.index
        markdown += (
            f"\nOpenSearch `{idx.index}`: {idx.documents_indexed} indexed, {idx.documents_deleted} deleted, "
            f"{idx.documents_failed} rejected, {idx.shards_pending} shard(s) pending"
            + (f" ({idx.error})" if idx.error else "") + "\n"
        )
    if done_now:
        markdown += "\n| shard | images | errors | seconds |\n|---|---|---|---|\n" + "".join(
            f"| {s.shard_id} | {s.images} | {s.images - s.ok} | {s.wall_s:.1f} |\n" for s in done_now
        )
    create_markdown_artifact(key="humantag-run-summary", markdown=markdown, description=f"run {summary.run_id}")


def run_label_archive(config: RunConfig) -> RunSummary:
    """Run the flow in this process (Prefect's temporary server unless PREFECT_API_URL is set)."""
    start_temporary_prefect_server()
    return label_archive(config)
