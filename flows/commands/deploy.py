"""`humantag deploy nightly SOURCE --out DEST`: a scheduled Prefect deployment of a run.

Its flags are `run`'s (generated from RunConfig, default --mode incremental)
without the secrets, plus the schedule's; the deployment stores the resulting
configuration, so anything `run` can do can be scheduled.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field

from humantag.flows import options
from humantag.flows.config import RunConfig, RunMode, run_options

deploy_app = typer.Typer(help="Create Prefect deployments (needs PREFECT_API_URL).", no_args_is_help=True,
                         rich_markup_mode=None)

NIGHTLY_DOC = """Label what is new or changed in SOURCE on a schedule (by default an incremental run every night).

Takes every `humantag run` option. Credentials are not stored in the deployment:
the worker's environment provides AWS_*, OPENSEARCH_PASSWORD and RAY_ADDRESS.
Start a worker with `prefect worker start --pool NAME`.
"""
NIGHTLY_DEFAULTS: Mapping[options.Path, Any] = {("mode",): RunMode.incremental}


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str = Field(default="0 2 * * *", description="When to run (cron, in --timezone).")
    timezone: str = Field(default="UTC", description="Time zone of the cron schedule.")
    name: Optional[str] = Field(default=None, description="Deployment name. Default: nightly-<hash of SOURCE and OUT>.")
    work_pool: str = Field(default="humantag-process", description="Process work pool (created if missing).")

    def deployment_name(self, config: RunConfig) -> str:
        return self.name or f"nightly-{hashlib.sha256(f'{config.source.url}|{config.dest}'.encode()).hexdigest()[:8]}"


@functools.cache
def schedule_options() -> list[options.Option]:
    return options.options_of(Schedule)


def nightly_options() -> list[options.Option]:
    """`run`'s options except secrets (never stored), then the schedule's."""
    return [o for o in run_options() if not o.secret] + schedule_options()


def nightly(**values: Any) -> None:
    from humantag.flows.deploy import deploy_nightly

    config = options.model_from_values(RunConfig, run_options(), values)
    schedule = options.model_from_values(Schedule, schedule_options(), values)
    name = schedule.deployment_name(config)
    deployment_id = deploy_nightly(config, name, schedule.cron, schedule.work_pool, schedule.timezone)
    typer.echo(f"deployment label_archive/{name} ({deployment_id}): {schedule.cron} {schedule.timezone} "
               f"on work pool {schedule.work_pool}")
    typer.echo(f"start a worker: prefect worker start --pool {schedule.work_pool}")
    typer.echo(f"run it now:     prefect deployment run 'label_archive/{name}'")


def register(app: typer.Typer) -> None:
    deploy_app.command("nightly", no_args_is_help=True)(
        options.command(nightly, nightly_options(), doc=NIGHTLY_DOC, defaults=NIGHTLY_DEFAULTS, name="nightly"))
    app.add_typer(deploy_app, name="deploy")
