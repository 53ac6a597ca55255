"""`humantag run SOURCE --out DEST`: label an archive into Parquet."""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from typing import Any, Optional

import typer

from flows.commands import opensearch_options as os_opts
from flows.errors import UserError

log = logging.getLogger("humantag.run")


def parse_key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values parsed as JSON when they look like it (numbers, true/false)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def register(app: typer.Typer) -> None:
    app.command("run", no_args_is_help=True)(run)
    app.command("backfill", no_args_is_help=True)(_backfill_command())


def _backfill_command() -> Callable[..., None]:
    """`backfill` is `run` planned against the ledger, with backfill defaults (same options otherwise)."""
    signature = inspect.signature(run)
    drop = {"incremental", "relabel_stale", "_backfill"}
    defaults = {"listing_workers": 8}
    params = []
    for param in signature.parameters.values():
        if param.name in drop:
            continue
        if param.name in defaults:
            option = copy.copy(param.default)
            option.default = defaults[param.name]
            param = param.replace(default=option)
        params.append(param)

    def backfill(**kwargs: Any) -> None:
        run(**kwargs, incremental=False, relabel_stale=True, _backfill=True)

    backfill.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    backfill.__annotations__ = {k: v for k, v in run.__annotations__.items() if k not in drop}
    backfill.__doc__ = """Label a whole bucket once, or again after a model upgrade: resumable, skips what is done.

    Plans against the ledger in OUT: objects already labeled by the current
    labeler/prompt/schema version are skipped, stale ones relabeled. The run id is
    derived from the command: after Ctrl-C, a killed driver or a lost worker,
    rerun the same command to continue. Use --dry-run first to see the plan.
    """
    return backfill


@os_opts.with_opensearch_flags()
def run(
    source: str = typer.Argument(..., help="Image archive: a folder, file:///path, or s3://bucket/prefix.", show_default=False),
    out: str = typer.Option(..., "--out", "-o", envvar="HUMANTAG_OUT", help="Destination folder or s3:// prefix for labels/ and _runs/.", show_default=False),
    labeler: Optional[str] = typer.Option(None, "--labeler", "-l", envvar="HUMANTAG_LABELER", help="Labeler to run (image-facts, cpu, gate, humanvlm). Default: HumanVLM behind the person gate when the Ray cluster has a GPU, else the cpu labeler."),
    shard_size: int = typer.Option(256, "--shard-size", envvar="HUMANTAG_SHARD_SIZE", min=1, help="Images per shard: the unit of work, output file and resume."),
    replicas: int = typer.Option(1, "--replicas", "-r", envvar="HUMANTAG_REPLICAS", min=1, help="Labeler replicas (Ray actors)."),
    num_cpus: Optional[float] = typer.Option(None, "--num-cpus", envvar="HUMANTAG_NUM_CPUS", min=0, help="Ray CPUs per replica (default: the labeler's own)."),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", envvar="HUMANTAG_NUM_GPUS", min=0, help="GPUs per replica; fractions put several replicas on one GPU (default: the labeler's own)."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", envvar="HUMANTAG_BATCH_SIZE", min=1, help="Images per labeler call."),
    shard_concurrency: int = typer.Option(2, "--shard-concurrency", envvar="HUMANTAG_SHARD_CONCURRENCY", min=1, help="Shards fed to the replica pool at once."),
    include: list[str] = typer.Option([], "--include", help="Only keys matching this glob (relative to SOURCE; repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", help="Skip keys matching this glob (repeatable)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", envvar="HUMANTAG_RUN_ID", help="Name of the run. Default: derived from the command, so rerunning it resumes."),
    model: Optional[str] = typer.Option(None, "--model", envvar="HUMANTAG_MODEL", help="Model for model-based labelers: hub id, local folder or s3:// URL."),
    labeler_option: list[str] = typer.Option([], "--labeler-option", "-L", help="Extra labeler setting KEY=VALUE (repeatable), e.g. -L max_new_tokens=256."),
    sensitive_attributes: bool = typer.Option(False, "--sensitive-attributes", envvar="HUMANTAG_SENSITIVE_ATTRIBUTES", help="Also produce perceived gender presentation (never race or ethnicity). Off by default; recorded in the run summary."),
    max_pixels: int = typer.Option(89_478_485, "--max-pixels", envvar="HUMANTAG_MAX_PIXELS", min=1, help="Images with more pixels are error rows (decompression_bomb)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 endpoint (for S3-compatible servers)."),
    aws_access_key_id: Optional[str] = typer.Option(None, "--aws-access-key-id", envvar="AWS_ACCESS_KEY_ID", help="S3 access key.", show_default=False),
    aws_secret_access_key: Optional[str] = typer.Option(None, "--aws-secret-access-key", envvar="AWS_SECRET_ACCESS_KEY", help="S3 secret key.", show_default=False),
    region: Optional[str] = typer.Option(None, "--region", envvar="AWS_REGION", help="S3 region."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS", help="Join this Ray cluster instead of starting a local one."),
    incremental: bool = typer.Option(False, "--incremental", help="Label only objects that are new or changed since the last runs into OUT (per the ledger); mark rows of objects deleted from SOURCE."),
    relabel_stale: bool = typer.Option(False, "--relabel-stale", help="With --incremental: also relabel objects labeled by another labeler, prompt or schema version."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List and plan only: print objects, bytes, shards, already-labeled and estimated GPU-hours; write nothing."),
    listing_workers: int = typer.Option(1, "--listing-workers", min=1, envvar="HUMANTAG_LISTING_WORKERS", help="List an S3 source's top-level prefixes in parallel with this many threads."),
    gpu_rate: Optional[float] = typer.Option(None, "--gpu-rate", min=0.001, help="Images/s per GPU for --dry-run's estimate, overriding the labeler's own figure (measure with bench/humanvlm_throughput.py)."),
    opensearch: os_opts.OpenSearchFlags = os_opts.OpenSearchFlags(),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs only)."),
    json_summary: bool = typer.Option(False, "--json", help="Print the run summary as JSON instead of a table."),
    _backfill: bool = typer.Option(False, "--_backfill", hidden=True),
) -> None:
    """Label every image under SOURCE; write one Parquet row per image under OUT/labels.

    Rerunning the same command after an interruption finishes the shards that
    have no completion marker and relabels nothing else. With --opensearch-url
    (or OPENSEARCH_URL) each shard is indexed after its Parquet commit; if
    OpenSearch is down the labels are still written, the run exits with code 3,
    and the next run or `humantag index OUT` indexes what is pending.
    """
    from flows.run_command import RunRequest, execute_run


    request = RunRequest(
        source=source, out=out, labeler=labeler, shard_size=shard_size, replicas=replicas, num_cpus=num_cpus,
        num_gpus=num_gpus, batch_size=batch_size, shard_concurrency=shard_concurrency, include=tuple(include),
        exclude=tuple(exclude), run_id=run_id, model=model, labeler_extra=parse_key_values(labeler_option, "--labeler-option"),
        sensitive_attributes=sensitive_attributes, max_pixels=max_pixels, endpoint_url=endpoint_url,
        aws_access_key_id=aws_access_key_id, aws_secret_access_key=aws_secret_access_key, region=region,
        ray_address=ray_address, show_progress=not no_progress, json_summary=json_summary,
        incremental=incremental, relabel_stale=relabel_stale, dry_run=dry_run, listing_workers=listing_workers,
        gpu_rate=gpu_rate, backfill=_backfill, opensearch=opensearch.settings(),
    )
    if relabel_stale and not (incremental or _backfill):
        raise UserError("--relabel-stale needs --incremental")
    execute_run(request)
