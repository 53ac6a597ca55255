"""Create the scheduled Prefect deployment of `label_archive` with a stored RunConfig."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Optional
from uuid import UUID

from croniter import croniter

from humantag.flows.config import RunConfig, run_options
from humantag.flows.options import dump_without_secrets
from humantag.flows.errors import UserError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/label_archive.py:label_archive"


def deployment_parameters(config: RunConfig) -> dict:
    """Flow parameters stored in the deployment: the whole configuration, never its secrets
    (the worker's environment provides them; see flows.options.fill_secrets_from_env)."""
    return {"config": dump_without_secrets(config, run_options())}


async def _ensure_work_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            log.info("created process work pool %s", name)


def deploy_nightly(config: RunConfig, name: str, cron: str, work_pool: str, timezone: Optional[str] = None) -> UUID:
    if not os.environ.get("PREFECT_API_URL"):
        raise UserError("set PREFECT_API_URL to the Prefect server that should hold the deployment (see docs/deploy.md)")
    if not croniter.is_valid(cron):
        raise UserError(f"--cron {cron!r} is not a valid cron expression")
    from prefect import flow
    from prefect.schedules import Cron

    try:
        asyncio.run(_ensure_work_pool(work_pool))
        source = flow.from_source(source=str(REPO_ROOT), entrypoint=ENTRYPOINT)
        return source.deploy(
            name=name,
            work_pool_name=work_pool,
            schedule=Cron(cron, timezone=timezone or "UTC"),
            parameters=deployment_parameters(config),
            description=f"Scheduled {config.mode.value} labeling of {config.source.url} into {config.dest}",
            tags=["humantag", "nightly", f"mode:{config.mode.value}"],
            build=False,
            push=False,
            print_next_steps=False,
        )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the server's answer, as one line
        raise UserError(f"could not create the deployment on {os.environ['PREFECT_API_URL']}: {exc}") from exc
