"""Where everything lives under DEST. The one place that knows these paths.

    DEST/labels/<shard_id>.parquet               rows of one shard (schema: workers.records)
    DEST/_runs/<run_id>/plan.json                the frozen plan of a run (shards, totals)
    DEST/_runs/<run_id>/manifest.parquet         every listed object with its shard id
    DEST/_runs/<run_id>/shards/<shard_id>.json   completion marker + stats, written last
    DEST/_runs/<run_id>/summary.json             merged stats of the run
    DEST/_runs/<run_id>/attempts/<started_at>.json  the summary of every attempt (reruns included)
    DEST/_index/<physical index>/<shard_id>.<token>.json   index markers (indexers.opensearch.sync)

Temporary files (a local atomic write's `.<name>.<hex>.tmp`, a manifest's
`.partial`) live next to their target until the write commits.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputLayout:
    root: str  # DEST path inside its filesystem (no protocol)

    @property
    def labels_dir(self) -> str:
        return posixpath.join(self.root, "labels")

    def labels_file(self, shard_id: str) -> str:
        return posixpath.join(self.labels_dir, f"{shard_id}.parquet")

    @property
    def runs_dir(self) -> str:
        return posixpath.join(self.root, "_runs")

    def run_dir(self, run_id: str) -> str:
        return posixpath.join(self.runs_dir, run_id)

    def plan_file(self, run_id: str) -> str:
        return posixpath.join(self.run_dir(run_id), "plan.json")

    def manifest_file(self, run_id: str) -> str:
        return posixpath.join(self.run_dir(run_id), "manifest.parquet")

    def markers_dir(self, run_id: str) -> str:
        return posixpath.join(self.run_dir(run_id), "shards")

    def marker_file(self, run_id: str, shard_id: str) -> str:
        return posixpath.join(self.markers_dir(run_id), f"{shard_id}.json")

    def summary_file(self, run_id: str) -> str:
        return posixpath.join(self.run_dir(run_id), "summary.json")

    def attempt_file(self, run_id: str, started_at: str) -> str:
        stamp = started_at.replace(":", "").replace("+0000", "Z")
        return posixpath.join(self.run_dir(run_id), "attempts", f"{stamp}.json")

    @property
    def index_dir(self) -> str:
        return posixpath.join(self.root, "_index")

    def index_markers_dir(self, index: str) -> str:
        return posixpath.join(self.index_dir, index)


TEMP_SUFFIXES = (".tmp", ".partial")


def is_temp_file(path: str) -> bool:
    """A write in progress, or left behind by a writer that died."""
    return path.endswith(TEMP_SUFFIXES)
