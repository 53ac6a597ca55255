"""`humantag run SOURCE --out DEST` and `humantag backfill`: flags generated from RunConfig (flows/config.py)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field

from humantag.flows import options
from humantag.flows.config import RunConfig, RunMode, run_options

RUN_DOC = """Label every image under SOURCE; write one Parquet row per image under OUT/labels.

Rerunning the same command after an interruption finishes the shards that have
no completion marker and relabels nothing else. With --opensearch-url (or
OPENSEARCH_URL) each shard is indexed after its Parquet commit; if OpenSearch is
down the labels are still written, the run exits with code 3, and the next run or
`humantag index OUT` indexes what is pending.
"""

BACKFILL_DOC = """Label a whole bucket once, or again after a model upgrade: resumable, skips what is done.

Plans against the ledger in OUT: objects already labeled by the current
labeler/prompt/schema version are skipped, stale ones relabeled. The run id is
derived from the command: after Ctrl-C, a killed driver or a lost worker, rerun
the same command to continue. Use --dry-run first to see the plan.
"""

# What makes `backfill` a backfill: fixed run settings (not flags) and other defaults.
BACKFILL_FIXED: Mapping[options.Path, Any] = {("mode",): RunMode.backfill, ("relabel_stale",): True}
BACKFILL_DEFAULTS: Mapping[options.Path, Any] = {("listing_workers",): 8}


class RunOutput(BaseModel):
    """How `run` and `backfill` report; not part of the run (a deployment has none of these)."""

    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(default=False, description="List and plan only: print objects, bytes, shards, "
                          "already-labeled and estimated GPU-hours; write nothing.")
    progress: bool = Field(default=True, description="Progress bar on the terminal (off: logs only).",
                           json_schema_extra={"flag": "--progress/--no-progress"})
    json_summary: bool = Field(default=False, description="Print the run summary as JSON instead of a table.",
                               json_schema_extra={"flag": "--json"})
    gpu_rate: Optional[float] = Field(default=None, gt=0, description="Images/s per GPU for --dry-run's estimate, "
                                      "overriding the labeler's own figure (measure with bench/humanvlm_throughput.py).")


@functools.cache
def output_options() -> list[options.Option]:
    return options.options_of(RunOutput)


def command_options(fixed: Mapping[options.Path, Any]) -> list[options.Option]:
    """The run options a command exposes: every one it does not fix, then how it reports."""
    return [o for o in run_options() if o.path not in fixed] + output_options()


def _handler(fixed: Mapping[options.Path, Any]):
    def handle(**values: Any) -> None:
        from humantag.flows.run_command import execute_run

        config = options.model_from_values(RunConfig, run_options(), values, fixed)
        execute_run(config, options.model_from_values(RunOutput, output_options(), values))

    return handle


def register(app: typer.Typer) -> None:
    app.command("run", no_args_is_help=True)(
        options.command(_handler({}), command_options({}), doc=RUN_DOC, name="run"))
    app.command("backfill", no_args_is_help=True)(
        options.command(_handler(BACKFILL_FIXED), command_options(BACKFILL_FIXED), doc=BACKFILL_DOC,
                        defaults=BACKFILL_DEFAULTS, name="backfill"))
