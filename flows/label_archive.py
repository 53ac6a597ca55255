"""The `label_archive` Prefect flow: plan, label every unfinished shard, summarise.

One Prefect task per shard. Tasks are retried only for infrastructure
failures (storage unreachable, a Ray actor or worker lost); a bad image never
fails a task, it is an error row. Prefect runs without a server unless
PREFECT_API_URL is set; Ray starts locally unless RAY_ADDRESS is set.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any, Optional

import ray
from prefect import flow, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from flows import progress
from flows.config import RunConfig
from flows.errors import ShardsFailed, UserError
from flows.listing import ListingReport, iter_source
from flows.incremental import CurrentVersions, build_full_plan, build_incremental_plan, read_deleted
from flows.indexing import ShardIndexing
from flows.plan import RunPlan, ShardSpec, load_plan
from flows.run_ids import resolve_run_id
from flows.ray_runtime import ensure_ray
from flows.shard_runner import ShardStats, load_markers, run_shard
from indexers.layout import OutputLayout
from indexers.opensearch.sync import IndexReport
from workers.actors import LabelerPool
from indexers.ledger import rewrite_shard
from workers.labelers import Labeler, create_labeler
from workers.loader import DecodeOptions
from workers.records import SCHEMA_VERSION, utcnow
from workers.storage import StorageUnavailable, classify_storage_error, filesystem, write_bytes_atomic

log = logging.getLogger(__name__)


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    source: str
    dest: str
    labeler: str
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
    wall_s: float
    images_per_s: float
    finished_at: str
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
    stats = run_shard(shard, pool, config, decode, fs, layout, run_id, on_batch=progress.listener().advance)
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
            relabel_stale=config.relabel_stale, track_deletions=config.track_deletions and not config.backfill,
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
              done_now: list[ShardStats], wall_s: float, settings: dict[str, Any]) -> RunSummary:
    errors: collections.Counter[str] = collections.Counter()
    for stats in markers.values():
        errors.update(stats.errors)
    images_now = sum(s.images for s in done_now)
    return RunSummary(
        run_id=run_id,
        source=config.source.url,
        dest=config.dest,
        labeler=config.labeler,
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
        wall_s=wall_s,
        images_per_s=images_now / wall_s if wall_s > 0 else 0.0,
        finished_at=utcnow().isoformat(),
    )


@flow(name="label_archive", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def label_archive(config: RunConfig) -> RunSummary:
    started = time.perf_counter()
    if config.labeler == "auto":  # deployments choose where they run: GPU cluster or not
        from workers.labelers.default import choose_default_labeler

        ensure_ray(config.ray_address)
        chosen, why = choose_default_labeler()
        log.info("labeler %s (%s)", chosen, why)
        config = config.model_copy(update={"labeler": chosen})
    fs, root = filesystem(config.dest, config.storage)
    layout = OutputLayout(root)
    run_id = resolve_run_id(config, fs, layout)
    indexing = ShardIndexing(config.opensearch.with_env_secrets(), fs, layout, run_id) if config.opensearch else None
    labeler = create_labeler(config.labeler, config.labeler_options)
    plan = plan_run(config, run_id, labeler)
    markers = load_markers(fs, layout, run_id)
    todo = [s for s in plan.shards if s.shard_id not in markers]
    done_before = len(plan.shards) - len(todo)
    progress.listener().start(plan.total_objects, sum(m.images for m in markers.values()))

    settings = {"labeler": config.labeler, **labeler.run_info()}
    done_now: list[ShardStats] = []
    if todo:
        ensure_ray(config.ray_address)
        placement = labeler.default_placement()
        num_cpus = config.pool.num_cpus if config.pool.num_cpus is not None else placement.num_cpus
        num_gpus = config.pool.num_gpus if config.pool.num_gpus is not None else placement.num_gpus
        decode = config.decode.model_copy(update={"max_side": config.decode.max_side or labeler.decode_max_side})
        log.info("starting %d %s replica(s) (%s CPU, %s GPU each)", config.pool.replicas, config.labeler, num_cpus, num_gpus)
        pool = LabelerPool(config.labeler, config.labeler_options, config.pool.replicas, _placement(num_cpus, num_gpus))
        settings.update(pool.descriptions[0])
        try:
            # The task runner's thread count bounds how many shards feed the pool at once.
            futures = [
                label_shard.with_options(retries=config.shard_retries).submit(shard, pool, config, decode, run_id, indexing)
                for shard in todo
            ]
            failed = []
            for shard, future in zip(todo, futures):
                future.wait()
                state = future.state
                if state.is_completed():
                    done_now.append(future.result())
                else:
                    failed.append((shard.shard_id, future.result(raise_on_failure=False)))
        finally:
            pool.shutdown()
        if failed:
            causes = [(shard_id, exc if isinstance(exc, BaseException) else None) for shard_id, exc in failed]
            raise ShardsFailed(causes) from causes[0][1]
    progress.listener().finish()
    if plan.counts.deleted:
        log.info("marked %d row(s) deleted", apply_deletions(config, run_id))
    index_report = indexing.finish() if indexing is not None else None

    markers = load_markers(fs, layout, run_id)
    summary = summarise(config, run_id, plan, markers, done_before, done_now, time.perf_counter() - started, settings)
    summary.index = index_report
    write_bytes_atomic(fs, layout.summary_file(run_id), json.dumps(summary.model_dump(mode="json"), indent=1).encode())
    publish_artifact(summary)
    return summary


def publish_artifact(summary: RunSummary) -> None:
    """The run's summary as a Prefect artifact, visible in the UI next to the flow run."""
    from prefect.artifacts import create_markdown_artifact

    errors = "\n".join(f"| {kind} | {count} |" for kind, count in sorted(summary.errors.items())) or "| none | 0 |"
    plan = ", ".join(f"{k} {v}" for k, v in summary.plan.items() if v)
    markdown = (
        f"## humantag run `{summary.run_id}`\n\n"
        f"{summary.source} → {summary.dest}, labeler `{summary.labeler}` ({', '.join(summary.labeler_versions)})\n\n"
        f"| images | ok | errors | gated | this run | rate |\n|---|---|---|---|---|---|\n"
        f"| {summary.total_images} | {summary.ok} | {summary.total_images - summary.ok} | {summary.gated} "
        f"| {summary.images_this_run} in {summary.wall_s:.1f}s | {summary.images_per_s:.1f} img/s |\n\n"
        f"Plan: {plan}\n\n| error kind | count |\n|---|---|\n{errors}\n"
    )
    if summary.index is not None:
        idx = summary.index
        markdown += (
            f"\nOpenSearch `{idx.index}`: {idx.documents_indexed} indexed, {idx.documents_deleted} deleted, "
            f"{idx.documents_failed} rejected, {idx.shards_pending} shard(s) pending"
            + (f" ({idx.error})" if idx.error else "") + "\n"
        )
    create_markdown_artifact(key="humantag-run-summary", markdown=markdown, description=f"run {summary.run_id}")


def _placement(num_cpus: float, num_gpus: float):
    from workers.labelers.base import Placement

    return Placement(num_cpus=num_cpus, num_gpus=num_gpus)


def run_label_archive(config: RunConfig) -> RunSummary:
    """Run the flow with `config.shard_concurrency` shards in flight."""
    runner = ThreadPoolTaskRunner(max_workers=config.shard_concurrency)
    return label_archive.with_options(task_runner=runner)(config)
