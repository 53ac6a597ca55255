"""Indexing inside the flows: each shard after its Parquet commit, then a catch-up sync.

The labels are the source of truth. OpenSearch being slow or down never fails a
shard or loses a label: a shard that could not be indexed stays pending (no
index marker) and the next sync, at the end of this run, the next run, or
`humantag index`, picks it up.

A breaker keeps an outage from slowing labeling: per-shard indexing makes one
attempt (no backoff while the shard holds its slot), and a failure to reach
OpenSearch opens the breaker, so later shards skip indexing at once. After
`retry_after_s` the next shard tries again (one shard at a time): if OpenSearch
answers, the breaker closes and shards are indexed as they commit again (a
backfill of many hours keeps its documents searchable after a short outage);
if not, it stays open for another `retry_after_s`. `finish()` makes the one
catch-up sync of whatever was skipped, with the full retry policy.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

import fsspec
from prefect import flow

from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.aliases import IndexNames, ensure_index
from humantag.indexers.opensearch.bulk import describe_unavailable
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.indexers.opensearch.sync import IndexReport, index_into, rebuild_index, sync_index
from humantag.workers.storage import StorageOptions, filesystem

log = logging.getLogger(__name__)


class ShardIndexing:
    """One flow run's connection to OpenSearch; thread-safe (shard tasks run in threads)."""

    def __init__(self, settings: OpenSearchSettings, fs: fsspec.AbstractFileSystem, layout: OutputLayout, run_id: str) -> None:
        self.settings = settings
        self.fs = fs
        self.layout = layout
        self.run_id = run_id
        self._lock = threading.Lock()
        self._client = None
        self._target: Optional[str] = None
        self._unavailable: Optional[str] = None  # set: the breaker is open, shards stay pending
        self._retry_at = 0.0  # while open: when the next shard may try OpenSearch again
        self._probing = False  # a shard is trying it now (the others keep skipping)
        self.per_shard = IndexReport()

    def _connect(self) -> Optional[str]:
        """The index to write to, or None: the breaker is open (or another shard is trying OpenSearch)."""
        with self._lock:
            if self._unavailable is not None:
                if self._probing or time.monotonic() < self._retry_at:
                    return None
                self._probing = True
            if self._target is None:
                try:
                    self._client = self.settings.client()
                    self._target = ensure_index(self._client, IndexNames(self.settings.index))
                except Exception as exc:  # noqa: BLE001 - labels go on; the final sync reports it
                    self._trip(describe_unavailable(self.settings, exc))
                    return None
            return self._target

    def _trip(self, reason: str) -> None:
        """Open the breaker (caller holds the lock or is the only writer): shards skip indexing for a while."""
        if self._unavailable is None:
            log.warning("%s; labeling goes on, shards wait for the catch-up sync at the end (next try in %.0fs)",
                        reason, self.settings.retry_after_s)
        self._unavailable = reason
        self._probing = False
        self._retry_at = time.monotonic() + self.settings.retry_after_s

    def _close(self) -> None:
        if self._unavailable is not None:
            log.warning("OpenSearch at %s answers again: shards are indexed as they commit; the ones skipped "
                        "meanwhile are indexed by the catch-up sync at the end", self.settings.safe_urls())
        self._unavailable = None
        self._probing = False

    @property
    def tripped(self) -> Optional[str]:
        """Why the breaker is open now (None: closed)."""
        return self._unavailable

    def index_shard(self, shard_id: str) -> None:
        """Index one committed shard now; on any failure leave it pending for the final sync."""
        target = self._connect()
        if target is None:
            return
        try:
            # One attempt per shard: no backoff while the shard holds its slot (the final sync retries).
            report = index_into(self.settings, self.fs, self.layout, self.run_id, target, only={shard_id},
                                client=self._client, max_restarts=0)
        except Exception as exc:  # noqa: BLE001
            with self._lock:
                self._trip(describe_unavailable(self.settings, exc))
            return
        with self._lock:
            self.per_shard.shards_indexed += report.shards_indexed
            self.per_shard.documents_indexed += report.documents_indexed
            if report.error:
                self._trip(report.error if report.error.startswith("OpenSearch at")
                           else f"OpenSearch at {self.settings.safe_urls()} unavailable: {report.error}")
            else:
                self._close()

    def finish(self) -> IndexReport:
        """Index everything still pending (superseded/deleted rows rewrote older shards; earlier failures)."""
        final = sync_index(self.settings, self.fs, self.layout, self.run_id)
        final.shards_indexed += self.per_shard.shards_indexed
        final.documents_indexed += self.per_shard.documents_indexed
        if final.error is None and final.shards_pending == 0 and final.shards_failed == 0:
            log.info("index %s up to date (%d documents indexed, %d deleted this run)",
                     final.index, final.documents_indexed, final.documents_deleted)
        return final


@flow(name="reindex", log_prints=False)
def reindex(dest: str, opensearch: OpenSearchSettings, storage: StorageOptions, rebuild: bool = False,
            run_id: Optional[str] = None) -> IndexReport:
    """Parquet → OpenSearch: index what is pending, or (`rebuild`) fill a new index and swap the aliases."""
    from humantag.flows import progress

    fs, root = filesystem(dest, storage)
    layout = OutputLayout(root)
    name = run_id or ("rebuild-" if rebuild else "index-") + opensearch.index

    def on_documents(count: int) -> None:  # one document per image: the same bar as labeling
        progress.listener().advance(count, 0)

    if rebuild:
        report = rebuild_index(opensearch, fs, layout, name, on_documents=on_documents)
    else:
        report = sync_index(opensearch, fs, layout, name, on_documents=on_documents, verify=True)
    log.info("reindex %s: %s", dest, report.model_dump())
    return report
