"""The configuration of one labeling run: the only place a run option is declared.

`humantag run`, `backfill` and `deploy nightly` generate their flags from these
models (flows/options.py: help = the field's description, env var and flag from the
field name), the `label_archive` flow receives a RunConfig, and a deployment stores
one (secrets excluded). Add a run setting as a field here or in the nested model that
owns the concept; it becomes a flag of every command by itself.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import os
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from humantag.flows.listing import SourceSpec
from humantag.flows.options import Option, options_of
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.workers.labelers import is_known_labeler, labeler_names
from humantag.workers.labelers.base import LabelerOptions
from humantag.workers.loader import DecodeOptions
from humantag.workers.storage import StorageOptions, protocol_of


class RunMode(str, enum.Enum):
    full = "full"  # everything under SOURCE; the run id derives from the command, a rerun resumes
    incremental = "incremental"  # only what is new/changed since the last runs (ledger); marks deletions
    backfill = "backfill"  # incremental planning, one stable run id until finished, no deletion marks


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(default=1, ge=1, description="Labeler replicas (Ray actors).", json_schema_extra={"short": "-r"})
    num_cpus: Optional[float] = Field(
        default=None, ge=0,
        description="Ray CPUs per replica. Default: the labeler's own, lowered so the replicas and a "
                    "read+decode task fit the cluster.")
    num_gpus: Optional[float] = Field(
        default=None, ge=0,
        description="GPUs per replica; fractions put several replicas on one GPU. Default: the labeler's own.")
    inflight_per_replica: int = Field(default=2, ge=1, description="Batches queued per replica (backpressure).")
    decode_cpus: float = Field(default=0.5, gt=0, description="Ray CPUs per read+decode task.")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SourceSpec
    dest: str = Field(description="Destination folder or s3:// prefix for labels/ and _runs/.",
                      json_schema_extra={"flag": "--out", "short": "-o"})
    labeler: Optional[str] = Field(
        default=None,
        description=f"Labeler: {', '.join(labeler_names())} or package.module:Class. Unset: chosen at run "
                    "time, HumanVLM behind the person gate when the Ray cluster has a GPU, else cpu.",
        json_schema_extra={"short": "-l"})
    labeler_options: LabelerOptions = LabelerOptions()
    mode: RunMode = Field(
        default=RunMode.full,
        description="full: everything under SOURCE. incremental: only objects new or changed since the last "
                    "runs into OUT, and mark rows of objects deleted from SOURCE. backfill: see `humantag backfill`.")
    relabel_stale: bool = Field(
        default=False,
        description="incremental/backfill: also relabel objects labeled by another labeler, prompt or schema version.")
    track_deletions: bool = Field(default=True, description="incremental: mark rows of objects gone from SOURCE.")
    shard_size: int = Field(default=256, ge=1, description="Images per shard: the unit of work, output file and resume.")
    shard_concurrency: int = Field(default=2, ge=1, description="Shards fed to the replica pool at once.")
    shard_retries: int = Field(default=2, ge=0, description="Retries of a shard after an infrastructure error.")
    listing_workers: int = Field(default=1, ge=1, description="List an S3 source's top-level prefixes in parallel with this many threads.")
    run_id: Optional[str] = Field(default=None, description="Name of the run. Default: derived from the command, so rerunning it resumes.")
    ray_address: Optional[str] = Field(default=None, description="Join this Ray cluster instead of starting a local one.",
                                       json_schema_extra={"env": "RAY_ADDRESS"})
    stall_warning_s: float = Field(default=120.0, gt=0,
                                   description="Log what Ray has pending when no batch finished for this many seconds.")
    pool: PoolConfig = PoolConfig()
    decode: DecodeOptions = DecodeOptions()
    storage: StorageOptions = StorageOptions()
    # Set: each shard is indexed after its Parquet commit, and the run ends with a catch-up sync.
    opensearch: Optional[OpenSearchSettings] = Field(
        default=None, json_schema_extra={"flag_prefix": "opensearch-", "env_prefix": OpenSearchSettings.ENV_PREFIX})

    @model_validator(mode="before")
    @classmethod
    def _from_older_shape(cls, data: Any) -> Any:
        """Configurations stored by deployments made before `mode` existed: booleans and the "auto" labeler."""
        if not isinstance(data, dict) or not ({"incremental", "backfill"} & data.keys() or data.get("labeler") == "auto"):
            return data
        data = dict(data)
        incremental, backfill = data.pop("incremental", False), data.pop("backfill", False)
        if "mode" not in data and (incremental or backfill):
            data["mode"] = RunMode.backfill if backfill else RunMode.incremental
        if data.get("labeler") == "auto":
            data["labeler"] = None
        return data

    @field_validator("labeler")
    @classmethod
    def _known_labeler(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and not is_known_labeler(name):
            raise ValueError(f"unknown labeler {name!r}; choose one of: {', '.join(labeler_names())} (or module:Class)")
        return name

    @field_validator("dest")
    @classmethod
    def _absolute_dest(cls, dest: str) -> str:
        return _absolute(dest.rstrip("/") or dest)

    @field_validator("source")
    @classmethod
    def _absolute_source(cls, source: SourceSpec) -> SourceSpec:
        return source.model_copy(update={"url": _absolute(source.url)})

    @model_validator(mode="after")
    def _mode_settings(self) -> "RunConfig":
        if self.relabel_stale and self.mode is RunMode.full:
            raise ValueError("--relabel-stale needs --mode incremental (or `humantag backfill`)")
        return self

    def command_key(self) -> str:
        """A hash of what defines the work: the same command gives the same key."""
        identity = {
            "source": self.source.model_dump(mode="json"),
            "dest": self.dest,
            "labeler": self.labeler,
            "labeler_options": self.labeler_options.model_dump(mode="json"),
            "shard_size": self.shard_size,
            "mode": self.mode.value,
            "relabel_stale": self.relabel_stale,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def resolved_run_id(self) -> str:
        """Explicit --run-id, or derived from the command, so rerunning the same command resumes.

        Incremental runs get a fresh id per run (see flows.run_ids); this is their prefix.
        """
        if self.run_id:
            return self.run_id
        kind = {RunMode.full: "run", RunMode.incremental: "inc", RunMode.backfill: "bf"}[self.mode]
        return f"{kind}-{self.command_key()}"

    @property
    def plans_against_ledger(self) -> bool:
        return self.mode is not RunMode.full


def _absolute(url: str) -> str:
    """Local paths are stored absolute: a deployment runs in another working directory."""
    if protocol_of(url) not in ("file", "local") or "://" in url:
        return url
    return os.path.abspath(os.path.expanduser(url))


@functools.cache
def run_options() -> list[Option]:
    """Every run option, derived from RunConfig and its nested models."""
    return options_of(RunConfig)
