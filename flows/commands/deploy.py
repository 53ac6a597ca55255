"""`humantag deploy nightly`: a scheduled Prefect deployment of the incremental run."""

from __future__ import annotations

from typing import Optional

import typer

from flows.commands import opensearch_options as os_opts

deploy_app = typer.Typer(help="Create Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


@deploy_app.command("nightly", no_args_is_help=True)
@os_opts.with_opensearch_flags(password=False)
def nightly(
    source: str = typer.Option(..., "--source", help="Image archive to label: folder or s3://bucket/prefix.", show_default=False),
    out: str = typer.Option(..., "--out", help="Destination of labels/ and _runs/.", show_default=False),
    cron: str = typer.Option("0 2 * * *", "--cron", help="When to run (cron, in --timezone)."),
    timezone: str = typer.Option("UTC", "--timezone", help="Time zone of the cron schedule."),
    name: Optional[str] = typer.Option(None, "--name", help="Deployment name (default: nightly-<hash of source and out>)."),
    work_pool: str = typer.Option("humantag-process", "--work-pool", envvar="HUMANTAG_WORK_POOL", help="Process work pool (created if missing); start a worker on it with `prefect worker start --pool NAME`."),
    labeler: Optional[str] = typer.Option(None, "--labeler", help="Labeler (default: chosen at run time: gate+HumanVLM with GPUs, else cpu)."),
    relabel_stale: bool = typer.Option(False, "--relabel-stale", help="Also relabel objects labeled by an older labeler/prompt/schema version."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Images per shard."),
    replicas: int = typer.Option(1, "--replicas", min=1, help="Labeler replicas."),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", min=0, help="GPUs per replica."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per labeler call."),
    model: Optional[str] = typer.Option(None, "--model", help="Model for HumanVLM: hub id, folder or s3:// URL."),
    opensearch: os_opts.OpenSearchFlags = os_opts.OpenSearchFlags(),
) -> None:
    """Label what is new or changed in SOURCE every night (an incremental `label_archive`).

    Credentials are not stored in the deployment: the worker's environment
    provides AWS_*, OPENSEARCH_PASSWORD and RAY_ADDRESS. With --opensearch-url
    (or OPENSEARCH_URL) each night's labels and deletions reach the index.
    """
    import hashlib

    from flows.deploy import deploy_nightly
    from flows.run_command import RunRequest, build_config

    request = RunRequest(source=source, out=out, labeler=labeler, shard_size=shard_size, replicas=replicas,
                         num_gpus=num_gpus, batch_size=batch_size, model=model, incremental=True,
                         relabel_stale=relabel_stale,
                         opensearch=opensearch.settings())
    config = build_config(request, labeler or "cpu")
    if labeler is None:
        config = config.model_copy(update={"labeler": "auto"})
    name = name or f"nightly-{hashlib.sha256(f'{source}|{out}'.encode()).hexdigest()[:8]}"
    deployment_id = deploy_nightly(config, name, cron, work_pool, timezone)
    typer.echo(f"deployment label_archive/{name} ({deployment_id}): {cron} {timezone} on work pool {work_pool}")
    typer.echo(f"start a worker: prefect worker start --pool {work_pool}")
    typer.echo(f"run it now:     prefect deployment run 'label_archive/{name}'")
