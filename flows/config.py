"""Configuration of one labeling run: what the CLI builds and the flow receives."""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from flows.listing import SourceSpec
from indexers.opensearch.settings import OpenSearchSettings
from workers.labelers.base import LabelerOptions
from workers.loader import DecodeOptions
from workers.storage import StorageOptions


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(default=1, ge=1)
    num_cpus: Optional[float] = Field(default=None, ge=0)  # None: the labeler's default
    num_gpus: Optional[float] = Field(default=None, ge=0)
    inflight_per_replica: int = Field(default=2, ge=1)  # batches queued per actor: backpressure
    decode_cpus: float = Field(default=0.5, gt=0)  # Ray CPUs per read+decode task


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: SourceSpec
    dest: str
    labeler: str = "image-facts"
    labeler_options: LabelerOptions = LabelerOptions()
    shard_size: int = Field(default=256, ge=1)
    shard_concurrency: int = Field(default=2, ge=1)  # shards fed to the pool at once
    pool: PoolConfig = PoolConfig()
    decode: DecodeOptions = DecodeOptions()
    storage: StorageOptions = StorageOptions()
    run_id: Optional[str] = None
    ray_address: Optional[str] = None
    shard_retries: int = Field(default=2, ge=0)
    # Plan against the ledger: only new/changed (and with relabel_stale, stale) objects.
    incremental: bool = False
    backfill: bool = False  # incremental planning, one stable run id until finished, no deletion marks
    relabel_stale: bool = False
    track_deletions: bool = True  # incremental: mark rows of objects gone from the source
    listing_workers: int = Field(default=1, ge=1)  # >1: list top-level prefixes in parallel
    # Set: each shard is indexed after its Parquet commit, and the run ends with a catch-up sync.
    opensearch: Optional[OpenSearchSettings] = None

    def command_key(self) -> str:
        """A hash of what defines the work: the same command gives the same key."""
        identity = {
            "source": self.source.model_dump(mode="json"),
            "dest": self.dest,
            "labeler": self.labeler,
            "labeler_options": self.labeler_options.model_dump(mode="json"),
            "shard_size": self.shard_size,
            "incremental": self.incremental,
            "backfill": self.backfill,
            "relabel_stale": self.relabel_stale,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]

    def resolved_run_id(self) -> str:
        """Explicit --run-id, or derived from the command, so rerunning the same command resumes.

        Incremental runs get a fresh id per run (see flows.run_ids); this is their prefix.
        """
        if self.run_id:
            return self.run_id
        kind = "bf" if self.backfill else "inc" if self.incremental else "run"
        return f"{kind}-{self.command_key()}"

    @property
    def plans_against_ledger(self) -> bool:
        return self.incremental or self.backfill
