"""Stream label shards (Parquet) into OpenSearch with opensearch-py's `streaming_bulk`.

Documents of many shards share bulk requests cut by bytes (`bulk_bytes`), read
from Parquet a record batch at a time, so memory stays bounded. A shard is
reported done only when OpenSearch has answered for every one of its
documents. 429s are retried per document with backoff by `streaming_bulk`; a
5xx, a 429 that outlasts those retries, or a lost connection restarts the
stream at the first shard not yet acknowledged, with exponential backoff
(documents have stable ids, so sending one twice is harmless).

Every operation carries the row's labeled_at (microseconds) as an external
version (`external_gte`): an older row of an image, sent after a newer one
(a duplicate left by two concurrent runs, shards indexed out of order), is
refused with 409 and counted as superseded, so the index holds the same row
as the ledger's live-row rule (indexers.ledger).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec
import pyarrow.parquet as pq

from humantag.indexers.documents import document_id, row_to_document
from humantag.indexers.ledger import row_key
from humantag.workers.records import ARROW_SCHEMA

log = logging.getLogger(__name__)

READ_BATCH_ROWS = 512
MAX_BACKOFF_S = 30.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class IndexingUnavailable(RuntimeError):
    """OpenSearch could not be reached or kept failing after the retries."""


@dataclass(frozen=True)
class ShardSource:
    shard_id: str
    path: str  # the label file inside its filesystem
    version: str  # changes whenever the file is rewritten (etag, or size + mtime)


@dataclass
class ShardOutcome:
    source: ShardSource
    indexed: int = 0
    deleted: int = 0
    superseded: int = 0  # refused because the index holds a newer row of the image
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failures


def shard_actions(fs: fsspec.AbstractFileSystem, source: ShardSource, index: str,
                  overwrite: Optional[Collection[str]] = None) -> Iterator[dict[str, Any]]:
    """Bulk actions for one label file: live rows are indexed, rows of deleted objects deleted.

    `overwrite` (uris to leave out): send the other rows without versions, replacing whatever the
    index holds, even a document someone deleted by hand (its delete raised the stored version).
    """
    with fs.open(source.path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
            for row in batch.to_pylist():
                if overwrite is not None and row["uri"] in overwrite:
                    continue
                doc_id = document_id(row["uri"])
                version = None if overwrite is not None else row_version(row)
                if row.get("deleted_at") is not None:
                    yield {"_op_type": "delete", "_index": index, "_id": doc_id, "_version": version, "_uri": row["uri"]}
                else:
                    yield {"_op_type": "index", "_index": index, "_id": doc_id, "_version": version,
                           "_source": row_to_document(row), "_uri": row["uri"]}


def row_version(row: dict[str, Any]) -> int:
    """The document version of a row: its labeled_at in microseconds (newer rows win, as in the ledger)."""
    labeled_at, _ = row_key(row)
    return (labeled_at - _EPOCH) // dt.timedelta(microseconds=1)


def _expand(action: dict[str, Any]) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    op = action["_op_type"]
    meta = {op: {"_index": action["_index"], "_id": action["_id"]}}
    if action["_version"] is not None:
        meta[op].update(version=action["_version"], version_type="external_gte")
    return meta, (None if op == "delete" else action["_source"])


class _Tracker:
    """Which shard each in-flight document belongs to, and which shards are fully answered."""

    def __init__(self) -> None:
        self.owners: dict[str, collections.deque[tuple[ShardSource, str]]] = collections.defaultdict(collections.deque)
        self.outstanding: collections.Counter[str] = collections.Counter()
        self.emitted: set[str] = set()
        self.outcomes: dict[str, ShardOutcome] = {}
        self.ready: list[ShardOutcome] = []

    def expect(self, source: ShardSource, doc_id: str, uri: str) -> None:
        self.outcomes.setdefault(source.shard_id, ShardOutcome(source))
        self.owners[doc_id].append((source, uri))
        self.outstanding[source.shard_id] += 1

    def all_emitted(self, source: ShardSource) -> None:
        self.outcomes.setdefault(source.shard_id, ShardOutcome(source))
        self.emitted.add(source.shard_id)
        self._maybe_ready(source.shard_id)

    def answer(self, op: str, item: dict[str, Any], ok: bool) -> None:
        source, uri = self.owners[item["_id"]].popleft()
        if not self.owners[item["_id"]]:
            del self.owners[item["_id"]]
        outcome = self.outcomes[source.shard_id]
        status = item.get("status")
        if op == "delete" and (ok or status == 404):  # already gone: what we wanted
            outcome.deleted += 1
        elif status == 409:  # the index holds a newer row of this image: this one is not live
            outcome.superseded += 1
        elif ok:
            outcome.indexed += 1
        else:
            error = item.get("error")
            outcome.failures.append({
                "uri": uri, "doc_id": item["_id"], "op": op, "status": status,
                "error": error if isinstance(error, (dict, str)) else repr(error),
            })
        self.outstanding[source.shard_id] -= 1
        self._maybe_ready(source.shard_id)

    def _maybe_ready(self, shard_id: str) -> None:
        if shard_id in self.emitted and self.outstanding[shard_id] == 0:
            self.emitted.discard(shard_id)
            del self.outstanding[shard_id]
            self.ready.append(self.outcomes.pop(shard_id))

    def drain(self) -> list[ShardOutcome]:
        ready, self.ready = self.ready, []
        return ready


def is_retryable(exc: BaseException) -> bool:
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, OSConnectionError):  # includes timeouts
        return True
    if isinstance(exc, TransportError):
        status = exc.status_code
        return isinstance(status, int) and (status == 429 or status >= 500)
    return isinstance(exc, (ConnectionError, TimeoutError))


def describe_error(exc: BaseException) -> str:
    """One line about a failed request, without URLs or credentials."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    if isinstance(exc, OSConnectionError):
        return f"connection failed ({type(exc.info).__name__ if getattr(exc, 'info', None) else 'no answer'})"
    if isinstance(exc, TransportError):
        return f"HTTP {exc.status_code} {exc.error}"
    return type(exc).__name__


def describe_unavailable(settings: Any, exc: BaseException) -> str:
    """Why `settings`' OpenSearch cannot be used, in one line: a name clash is not an outage."""
    from humantag.indexers.opensearch.aliases import AliasClash

    if isinstance(exc, AliasClash):
        return f"OpenSearch at {settings.safe_urls()}: {exc}"
    return f"OpenSearch at {settings.safe_urls()} unavailable: {describe_error(exc)}"


class BulkIndexer:
    def __init__(self, client: Any, fs: fsspec.AbstractFileSystem, index: str, bulk_bytes: int, max_retries: int,
                 initial_backoff_s: float = 1.0, on_documents: Optional[Callable[[int], None]] = None,
                 overwrite: Optional[Mapping[str, Collection[str]]] = None, max_restarts: Optional[int] = None) -> None:
        """`max_retries`: per-document 429 retries; `max_restarts`: stream restarts after a lost
        connection or a 5xx (default `max_retries`; 0 = one attempt, for callers with a breaker)."""
        self.client = client
        self.fs = fs
        self.index = index
        self.bulk_bytes = bulk_bytes
        self.max_retries = max_retries
        self.max_restarts = max_retries if max_restarts is None else max_restarts
        self.initial_backoff_s = initial_backoff_s
        self.on_documents = on_documents
        self.overwrite = overwrite or {}  # shard id → uris to leave out; the rest is sent unversioned

    def index_shards(self, shards: Iterable[ShardSource]) -> Iterator[ShardOutcome]:
        """Yield each shard's outcome once OpenSearch answered for all its documents."""
        pending: dict[str, ShardSource] = {s.shard_id: s for s in shards}
        failures_in_a_row = 0
        while pending:
            try:
                for outcome in self._stream(list(pending.values())):
                    pending.pop(outcome.source.shard_id, None)
                    failures_in_a_row = 0
                    yield outcome
                return
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_retryable(exc):
                    raise
                failures_in_a_row += 1
                if failures_in_a_row > self.max_restarts:
                    raise IndexingUnavailable(f"{describe_error(exc)}; {len(pending)} shard(s) not indexed") from None
                delay = min(MAX_BACKOFF_S, self.initial_backoff_s * 2 ** (failures_in_a_row - 1)) * (0.5 + random.random() / 2)
                log.warning("bulk request failed (%s); retrying %d shard(s) in %.1fs", describe_error(exc), len(pending), delay)
                time.sleep(delay)

    def _stream(self, shards: list[ShardSource]) -> Iterator[ShardOutcome]:
        from opensearchpy.helpers import streaming_bulk

        tracker = _Tracker()

        def actions() -> Iterator[dict[str, Any]]:
            for source in shards:
                for action in shard_actions(self.fs, source, self.index, self.overwrite.get(source.shard_id)):
                    tracker.expect(source, action["_id"], action["_uri"])
                    yield action
                tracker.all_emitted(source)

        answered = 0
        results = streaming_bulk(
            self.client, actions(), chunk_size=100_000, max_chunk_bytes=self.bulk_bytes,
            expand_action_callback=_expand, raise_on_error=False, raise_on_exception=True,
            max_retries=self.max_retries, initial_backoff=self.initial_backoff_s, max_backoff=MAX_BACKOFF_S,
        )
        for ok, info in results:
            op, item = next(iter(info.items()))
            tracker.answer(op, item, ok)
            answered += 1
            if self.on_documents and answered % 500 == 0:
                self.on_documents(500)
            yield from tracker.drain()
        if self.on_documents and answered % 500:
            self.on_documents(answered % 500)
        yield from tracker.drain()
