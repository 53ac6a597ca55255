"""Bring an OpenSearch index up to date with DEST/labels, resumably.

Each label file indexed without a failure gets a marker under
DEST/_index/<physical index>/<shard_id>.<version token>.json; the token is a
digest of the file's version (S3 ETag, or size + mtime) and of the index
instance (its UUID), so deciding what is pending takes two listings and no
reads, however many shards there are. A file is (re)indexed when it has no
marker for the target index instance or its version changed (a rerun,
superseded rows, objects marked deleted): an index deleted and recreated under
the same name (a restore, a mistake, a restarted test server) has another UUID,
so its old markers count as absent. `verify` also compares the documents
OpenSearch holds per shard with the markers it trusts and reindexes the shards
that disagree. Failed documents go to
DEST/_runs/<run_id>/index_errors/<shard_id>.jsonl and leave the shard unmarked,
so the next sync tries it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Callable
from typing import Any, Optional

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import superseded_rows
from humantag.indexers.opensearch.aliases import IndexNames, drop_old_indices, ensure_index, next_index, swap_aliases
from humantag.indexers.opensearch.bulk import (
    BulkIndexer,
    IndexingUnavailable,
    ShardOutcome,
    ShardSource,
    describe_error,
    describe_unavailable,
    is_retryable,
)
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.workers.records import utcnow
from humantag.workers.storage import write_bytes_atomic

log = logging.getLogger(__name__)


class IndexReport(BaseModel):
    """What one sync did; addable into run summaries. Never holds URLs with credentials."""

    model_config = ConfigDict(extra="forbid")
    index: str = ""
    shards_indexed: int = 0
    shards_failed: int = 0
    shards_pending: int = 0  # not attempted or not finished (OpenSearch unavailable)
    documents_indexed: int = 0
    documents_deleted: int = 0
    documents_failed: int = 0
    documents_superseded: int = 0  # older rows of an image the index already holds a newer row of
    shards_verified: int = 0  # marked shards whose document count OpenSearch confirmed (verify)
    count_mismatches: list[str] = Field(default_factory=list)  # marked shards it disagreed with: reindexed
    error_reports: list[str] = Field(default_factory=list)
    error: Optional[str] = None  # why indexing stopped, if it did

    @property
    def ok(self) -> bool:
        return self.error is None and self.shards_failed == 0 and self.shards_pending == 0


class IndexMarker(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shard_id: str
    version: str
    index: str
    index_uuid: str = ""  # the index instance the documents went to (see the module docstring)
    documents: int  # documents of this shard OpenSearch holds (its rows, less deleted and superseded ones)
    deleted: int
    indexed_at: str


def markers_dir(layout: OutputLayout, index: str) -> str:
    return layout.index_markers_dir(index)


def error_report_file(layout: OutputLayout, run_id: str, shard_id: str) -> str:
    return posixpath.join(layout.run_dir(run_id), "index_errors", f"{shard_id}.jsonl")


def _file_version(info: dict[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    return f"{info.get('size')}-{info.get('mtime') or info.get('LastModified') or info.get('created')}"


def label_sources(fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> list[ShardSource]:
    """Every committed label file with its version, in shard-id order (one listing call)."""
    if not fs.exists(layout.labels_dir):
        return []
    sources = []
    for info in fs.ls(layout.labels_dir, detail=True):
        name = posixpath.basename(info["name"])
        if info.get("type") == "file" and name.endswith(".parquet") and not name.startswith("."):
            sources.append(ShardSource(shard_id=name[: -len(".parquet")], path=info["name"], version=_file_version(info)))
    return sorted(sources, key=lambda s: s.shard_id)


def index_instance(client: Any, index: str) -> str:
    """The identity of the physical index `index` as it exists now: its UUID (else its creation date)."""
    info = client.indices.get(index=index)
    settings = next(iter(info.values()))["settings"]["index"]
    return str(settings.get("uuid") or settings["creation_date"])


def version_token(version: str, instance: str) -> str:
    """A file-name-safe digest of a label file's version and the index instance it was indexed into."""
    return hashlib.sha256(f"{version}\x00{instance}".encode()).hexdigest()[:16]


def marker_file(layout: OutputLayout, index: str, source: ShardSource, instance: str) -> str:
    """`<shard_id>.<version token>.json`: the version is in the name, so checking markers is listing only."""
    return posixpath.join(markers_dir(layout, index), f"{source.shard_id}.{version_token(source.version, instance)}.json")


def load_markers(fs: fsspec.AbstractFileSystem, layout: OutputLayout, index: str) -> dict[str, dict[str, str]]:
    """shard id → {version token: marker path} of the shards indexed into `index` (one listing, no reads)."""
    directory = markers_dir(layout, index)
    if not fs.exists(directory):
        return {}
    markers: dict[str, dict[str, str]] = {}
    for path in fs.ls(directory, detail=False):
        name = posixpath.basename(path)
        if name.endswith(".json") and not name.startswith(".") and name.count(".") >= 2:
            shard_id, token = name[: -len(".json")].rsplit(".", 1)
            markers.setdefault(shard_id, {})[token] = path
    return markers


def _label_source(fs: fsspec.AbstractFileSystem, layout: OutputLayout, shard_id: str) -> Optional[ShardSource]:
    path = layout.labels_file(shard_id)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return ShardSource(shard_id=shard_id, path=path, version=_file_version(info))


def pending_sources(fs: fsspec.AbstractFileSystem, layout: OutputLayout, index: str, instance: str,
                    only: Optional[set[str]] = None) -> tuple[list[ShardSource], dict[str, str]]:
    """Label files not yet indexed into this instance of `index` in their current version, and the
    markers trusted (shard id → marker path).

    `only` (a run's just-committed shards): one info + one exists per shard. Otherwise two listings
    (labels, markers); markers of other versions or instances, or of files gone, are removed on the way.
    """
    if only is not None:
        sources = [src for shard_id in sorted(only) if (src := _label_source(fs, layout, shard_id)) is not None]
        return [src for src in sources if not fs.exists(marker_file(layout, index, src, instance))], {}
    markers = load_markers(fs, layout, index)
    todo, trusted, stale = [], {}, []
    sources = label_sources(fs, layout)
    for source in sources:
        tokens = markers.get(source.shard_id, {})
        current = version_token(source.version, instance)
        stale += [path for token, path in tokens.items() if token != current]
        if current in tokens:
            trusted[source.shard_id] = tokens[current]
        else:
            todo.append(source)
    present = {s.shard_id for s in sources}
    stale += [path for shard_id, tokens in markers.items() if shard_id not in present for path in tokens.values()]
    if stale:
        fs.rm(stale)
    return todo, trusted


def shard_counts(client: Any, index: str) -> dict[str, int]:
    """Documents per shard id in `index` (a composite aggregation, paged)."""
    counts: dict[str, int] = {}
    after: Optional[dict[str, Any]] = None
    while True:
        composite: dict[str, Any] = {"size": 1000, "sources": [{"shard": {"terms": {"field": "shard_id"}}}]}
        if after:
            composite["after"] = after
        answer = client.search(index=index, body={"size": 0, "aggs": {"shards": {"composite": composite}}})
        agg = answer["aggregations"]["shards"]
        for bucket in agg["buckets"]:
            counts[bucket["key"]["shard"]] = int(bucket["doc_count"])
        after = agg.get("after_key")
        if not agg["buckets"] or not after:
            return counts


def verify_counts(client: Any, fs: fsspec.AbstractFileSystem, index: str, trusted: dict[str, str]) -> list[str]:
    """Shards whose trusted marker disagrees with the documents OpenSearch holds for them."""
    if not trusted:
        return []
    client.indices.refresh(index=index)
    held = shard_counts(client, index)
    contents = fs.cat(sorted(trusted.values()))  # concurrent GETs on object stores
    by_path = {path: IndexMarker.model_validate_json(data) for path, data in contents.items()}
    mismatched = []
    for shard_id, path in sorted(trusted.items()):
        marker = by_path.get(path) or by_path.get(fs._strip_protocol(path))
        if marker is None or marker.documents != held.get(shard_id, 0):
            mismatched.append(shard_id)
    return mismatched


def _record(fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str, index: str, instance: str,
            outcome: ShardOutcome, report: IndexReport) -> None:
    source = outcome.source
    report.documents_indexed += outcome.indexed
    report.documents_deleted += outcome.deleted
    report.documents_superseded += outcome.superseded
    if outcome.failures:
        report.shards_failed += 1
        report.documents_failed += len(outcome.failures)
        path = error_report_file(layout, run_id, source.shard_id)
        lines = "".join(json.dumps({"shard_id": source.shard_id, "index": index, **f}, default=str) + "\n" for f in outcome.failures)
        write_bytes_atomic(fs, path, lines.encode())
        report.error_reports.append(path)
        log.warning("shard %s: %d document(s) rejected by OpenSearch; see %s", source.shard_id, len(outcome.failures), path)
        return
    marker = IndexMarker(shard_id=source.shard_id, version=source.version, index=index, index_uuid=instance,
                         documents=outcome.indexed, deleted=outcome.deleted, indexed_at=utcnow().isoformat())
    write_bytes_atomic(fs, marker_file(layout, index, source, instance), marker.model_dump_json().encode())
    report.shards_indexed += 1


def index_into(settings: OpenSearchSettings, fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str,
               index: str, only: Optional[set[str]] = None, client: Any = None,
               on_documents: Optional[Callable[[int], None]] = None, instance: Optional[str] = None,
               verify: bool = False, max_restarts: Optional[int] = None) -> IndexReport:
    """Index every pending label file into the physical index `index` (`instance`: its UUID, if known).

    `verify` (full scans only): first compare the trusted markers with the documents per shard
    OpenSearch holds, and reindex the shards that disagree. `max_restarts`: how often a failed stream
    is restarted with backoff (default settings.max_retries).
    """
    client = client or settings.client()
    report = IndexReport(index=index)
    try:
        instance = instance or index_instance(client, index)
        todo, trusted = pending_sources(fs, layout, index, instance, only)
        mismatched = verify_counts(client, fs, index, trusted) if verify and only is None else []
    except Exception as exc:  # noqa: BLE001 - OpenSearch gone between two requests: reported, labels are safe
        if not _is_opensearch_failure(exc) or isinstance(exc, OSError) and not is_retryable(exc):
            raise
        report.error = f"OpenSearch at {settings.safe_urls()} unavailable: {describe_error(exc)}"
        report.shards_pending = len(only) if only is not None else len(label_sources(fs, layout))
        log.warning("indexing into %s stopped: %s", index, report.error)
        return report
    if verify and only is None:
        report.shards_verified = len(trusted) - len(mismatched)
        report.count_mismatches = mismatched
        if mismatched:
            log.warning("%d indexed shard(s) hold another number of documents in %s than their markers say; "
                        "reindexing them: %s", len(mismatched), index, ", ".join(mismatched[:10]))
            fs.rm([trusted[shard_id] for shard_id in mismatched])
            by_id = {s.shard_id: s for s in label_sources(fs, layout)}
            todo = sorted(todo + [by_id[s] for s in mismatched if s in by_id], key=lambda s: s.shard_id)
    report.shards_pending = len(todo)
    if not todo:
        return report
    # Shards that disagreed are sent unversioned (a document deleted by hand holds a higher version
    # than its row), all but their rows that are not current (indexers.ledger), which must not win.
    not_current = superseded_rows(fs, layout) if report.count_mismatches else {}
    overwrite = {shard_id: set(not_current.get(shard_id, {})) for shard_id in report.count_mismatches}
    indexer = BulkIndexer(client, fs, index, settings.bulk_bytes, settings.max_retries, on_documents=on_documents,
                          overwrite=overwrite, max_restarts=max_restarts)
    try:
        for outcome in indexer.index_shards(todo):
            report.shards_pending -= 1
            _record(fs, layout, run_id, index, instance, outcome, report)
    except IndexingUnavailable as exc:
        report.error = str(exc)
        log.warning("indexing into %s stopped: %s", index, exc)
    except Exception as exc:  # noqa: BLE001 - refused outright (401/403, a bad request): not worth retrying
        if not _is_opensearch_failure(exc):
            raise
        report.error = f"OpenSearch at {settings.safe_urls()} refused the bulk request: {describe_error(exc)}"
        log.warning("indexing into %s stopped: %s", index, report.error)
    if report.error is None:
        client.indices.refresh(index=index, ignore_unavailable=True)  # searches right after a run see its labels
    return report


def _is_opensearch_failure(exc: BaseException) -> bool:
    """An answer or silence from OpenSearch (any HTTP error, no connection, bad URL), not a bug of ours."""
    from opensearchpy.exceptions import TransportError

    return isinstance(exc, (TransportError, OSError, ValueError)) or is_retryable(exc)


def sync_index(settings: OpenSearchSettings, fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str,
               only: Optional[set[str]] = None, on_documents: Optional[Callable[[int], None]] = None,
               verify: bool = False) -> IndexReport:
    """Index pending label files into the index behind the write alias (created on first use).

    Never raises for an unreachable or failing OpenSearch: the labels are
    committed either way, and the report says what is still pending.
    """
    names = IndexNames(settings.index)
    try:
        client = settings.client()
        target = ensure_index(client, names)
    except Exception as exc:  # noqa: BLE001 - reported, labels are safe
        if not _is_opensearch_failure(exc):
            raise
        pending = len(label_sources(fs, layout)) if only is None else len(only)
        message = describe_unavailable(settings, exc)
        log.warning("%s; %d shard(s) left to index", message, pending)
        return IndexReport(index=names.write_alias, shards_pending=pending, error=message)
    return index_into(settings, fs, layout, run_id, target, only, client=client, on_documents=on_documents, verify=verify)


def rebuild_index(settings: OpenSearchSettings, fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str,
                  on_documents: Optional[Callable[[int], None]] = None) -> IndexReport:
    """Fill a new physical index from every label file, then swap both aliases to it atomically.

    Searches keep reading the old index until the swap. An interrupted rebuild
    resumes into the same new index (its markers say which shards are in).
    Shards committed while the rebuild ran are picked up by a catch-up pass
    right before the swap. The index before it is kept (a rollback is one
    alias swap); older ones are deleted.
    """
    names = IndexNames(settings.index)
    try:
        client = settings.client()
        target = next_index(client, names)
    except Exception as exc:  # noqa: BLE001 - reported; nothing was changed
        if not _is_opensearch_failure(exc):
            raise
        return IndexReport(index=names.read_alias, error=describe_unavailable(settings, exc))
    report = index_into(settings, fs, layout, run_id, target, client=client, on_documents=on_documents)
    if report.ok:
        catch_up = index_into(settings, fs, layout, run_id, target, client=client)
        report = _merge(report, catch_up)
    if not report.ok:
        log.warning("rebuild into %s incomplete; aliases unchanged (rerun to resume)", target)
        return report
    swap_aliases(client, names, target)
    drop_old_indices(client, names, keep=target)
    return report


def _merge(a: IndexReport, b: IndexReport) -> IndexReport:
    return IndexReport(
        index=a.index,
        shards_indexed=a.shards_indexed + b.shards_indexed,
        shards_failed=a.shards_failed + b.shards_failed,
        shards_pending=b.shards_pending,
        documents_indexed=a.documents_indexed + b.documents_indexed,
        documents_deleted=a.documents_deleted + b.documents_deleted,
        documents_failed=a.documents_failed + b.documents_failed,
        documents_superseded=a.documents_superseded + b.documents_superseded,
        shards_verified=a.shards_verified + b.shards_verified,
        count_mismatches=a.count_mismatches + b.count_mismatches,
        error_reports=a.error_reports + b.error_reports,
        error=b.error or a.error,
    )
