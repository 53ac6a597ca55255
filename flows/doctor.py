"""Check a labeling output (DEST) for what a crash, a concurrent run or an older version left, and repair it.

Findings, by kind:
  duplicate rows          rows that are not their uri's current row (indexers.ledger): never read,
                          but they cost space and, in an index filled by an older version, may be
                          what a document holds. Fix: drop them; reindex the files involved.
  temporary file          a write that never committed (its writer died). Fix: remove it.
  shard without marker    a committed label file no run marked done (a crash between the commit and
                          the marker, or a file copied in). Fix: write its marker from its rows.
  marker without file     a run (or index) marker whose label file is gone: a rerun would skip it.
                          Fix: remove the marker, so a rerun (or `humantag index`) redoes that shard.

Run it with no run writing into DEST: a run in progress has temporary files and
unmarked shards of its own.
"""

from __future__ import annotations

import collections
import enum
import logging
import posixpath

import fsspec
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from humantag.flows.shard_runner import shard_stats
from humantag.indexers.layout import OutputLayout, is_temp_file
from humantag.indexers.ledger import label_files, rewrite_shard, superseded_rows
from humantag.workers.records import LabeledImage
from humantag.workers.storage import write_bytes_atomic

log = logging.getLogger(__name__)


class FindingKind(str, enum.Enum):
    DUPLICATE_ROWS = "duplicate rows"
    TEMP_FILE = "temporary file"
    SHARD_WITHOUT_MARKER = "shard without marker"
    MARKER_WITHOUT_FILE = "marker without file"


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: FindingKind
    path: str
    detail: str = ""


class DoctorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dest: str
    label_files: int = 0
    findings: list[Finding] = Field(default_factory=list)
    fixed: list[Finding] = Field(default_factory=list)

    def counts(self, findings: list[Finding]) -> dict[str, int]:
        return dict(collections.Counter(f.kind.value for f in findings))


def _ls(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    return fs.ls(path, detail=False) if fs.exists(path) else []


def _shard_of(path: str) -> str:
    return posixpath.basename(path).split(".", 1)[0]


def _run_markers(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> dict[str, list[str]]:
    """shard id → its completion markers in every run."""
    markers: dict[str, list[str]] = collections.defaultdict(list)
    for run in _ls(fs, layout.runs_dir):
        for path in _ls(fs, layout.markers_dir(posixpath.basename(run.rstrip("/")))):
            if path.endswith(".json") and not is_temp_file(path):
                markers[_shard_of(path)].append(path)
    return markers


def _index_markers(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> dict[str, list[str]]:
    """shard id → its index markers, in every index."""
    markers: dict[str, list[str]] = collections.defaultdict(list)
    for index in _ls(fs, layout.index_dir):
        for path in _ls(fs, index):
            if path.endswith(".json") and not is_temp_file(path):
                markers[_shard_of(path)].append(path)
    return markers


def examine(fs: fsspec.AbstractFileSystem, layout: OutputLayout, dest: str) -> DoctorReport:
    fs.invalidate_cache()
    report = DoctorReport(dest=dest)
    files = label_files(fs, layout)
    report.label_files = len(files)
    shards = {_shard_of(f): f for f in files}
    for shard_id, uris in sorted(superseded_rows(fs, layout).items()):
        report.findings.append(Finding(kind=FindingKind.DUPLICATE_ROWS, path=layout.labels_file(shard_id),
                                       detail=f"{len(uris)} row(s) of images with a newer row elsewhere"))
    if fs.exists(layout.root):
        for path in sorted(fs.find(layout.root)):
            if is_temp_file(path):
                report.findings.append(Finding(kind=FindingKind.TEMP_FILE, path=path))
    run_markers = _run_markers(fs, layout)
    for shard_id, path in sorted(shards.items()):
        if shard_id not in run_markers:
            report.findings.append(Finding(kind=FindingKind.SHARD_WITHOUT_MARKER, path=path))
    for markers, what in ((run_markers, "run"), (_index_markers(fs, layout), "index")):
        for shard_id, paths in sorted(markers.items()):
            if shard_id not in shards:
                report.findings.extend(Finding(kind=FindingKind.MARKER_WITHOUT_FILE, path=p, detail=f"{what} marker")
                                       for p in paths)
    return report


def _write_marker(fs: fsspec.AbstractFileSystem, layout: OutputLayout, path: str) -> None:
    """A run marker rebuilt from the shard's rows, under the run that wrote most of them."""
    with fs.open(path, "rb") as fh:
        rows = [LabeledImage.model_validate(r) for r in pq.read_table(fh).to_pylist()]
    shard_id = _shard_of(path)
    run_id = collections.Counter(r.run_id for r in rows).most_common(1)[0][0] if rows else "doctor"
    times = sorted(r.labeled_at.isoformat() for r in rows) or [""]
    stats = shard_stats(shard_id, rows, path, labeler=rows[0].labeler if rows else "", wall_s=0.0,
                        bytes=sum(r.size_bytes or 0 for r in rows), started_at=times[0], finished_at=times[-1])
    write_bytes_atomic(fs, layout.marker_file(run_id, shard_id), stats.model_dump_json().encode())


def repair(fs: fsspec.AbstractFileSystem, layout: OutputLayout, report: DoctorReport) -> DoctorReport:
    """Fix every finding of `report`, then examine DEST again: the result lists what is left."""
    fixed: list[Finding] = []
    duplicates = superseded_rows(fs, layout)
    if duplicates:
        # The files that lose rows change (so they are reindexed); the files holding the current rows
        # may have lost the race in an index filled by an older version: reindex them too.
        involved = set(duplicates) | {shard for keys in duplicates.values() for _, shard in keys.values()}
        for shard_id, keys in sorted(duplicates.items()):
            rewrite_shard(fs, layout, shard_id, supersede=keys)
        index_markers = _index_markers(fs, layout)
        stale = [p for shard_id in sorted(involved) for p in index_markers.get(shard_id, [])]
        if stale:
            fs.rm(stale)
    for finding in report.findings:
        if finding.kind is FindingKind.TEMP_FILE or finding.kind is FindingKind.MARKER_WITHOUT_FILE:
            if fs.exists(finding.path):
                fs.rm(finding.path)
        elif finding.kind is FindingKind.SHARD_WITHOUT_MARKER:
            _write_marker(fs, layout, finding.path)
        fixed.append(finding)
        log.info("fixed %s: %s", finding.kind.value, finding.path)
    after = examine(fs, layout, report.dest)
    after.fixed = [f for f in fixed if f not in after.findings]
    return after
