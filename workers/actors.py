"""Ray actors holding labeler replicas, and the pool the shard driver feeds.

The actor loads its model once (`setup()` in the constructor, which runs on the
worker process Ray placed it on, so the device is chosen there). It receives
already-decoded images: the read/decode Ray tasks run beside it, and Ray hands
the actor a batch only once that batch's object is ready.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any

import ray

from humantag.workers.assemble import RowContext, assemble_row
from humantag.workers.images import DecodedImage
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.labelers.base import LabelOutput, Placement
from humantag.workers.records import LabeledImage

log = logging.getLogger(__name__)


class LabelerReplica:
    """Plain class (testable without Ray); `LabelerActor` is its Ray actor form."""

    def __init__(self, labeler_name: str, options: LabelerOptions) -> None:
        started = time.perf_counter()
        self.labeler = create_labeler(labeler_name, options)
        self.labeler.setup()
        self.setup_s = time.perf_counter() - started

    def describe(self) -> dict[str, Any]:
        return {
            "labeler": self.labeler.name,
            "labeler_version": self.labeler.version,
            "setup_s": self.setup_s,
            "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
            **self.labeler.run_info(),
        }

    def label(self, images: list[DecodedImage], run_id: str, shard_id: str) -> list[LabeledImage]:
        ctx = RowContext(run_id, shard_id, self.labeler.name, self.labeler.version)
        decodable = [img for img in images if img.ok]
        outputs: list[LabelOutput] = []
        if decodable:
            try:
                outputs = self.labeler.label(decodable)
            except Exception as exc:  # noqa: BLE001 - the labeler broke on this batch: rows, not a crash
                log.exception("labeler %s failed on a batch of %d", self.labeler.name, len(decodable))
                outputs = [LabelOutput.failed("label_error", f"{type(exc).__name__}: {exc}")] * len(decodable)
            if len(outputs) != len(decodable):
                raise RuntimeError(
                    f"labeler {self.labeler.name} returned {len(outputs)} results for {len(decodable)} images"
                )
        by_uri_index = iter(outputs)
        rows = []
        for img in images:
            rows.append(assemble_row(img, next(by_uri_index) if img.ok else None, ctx))
        # Drop pixel references early: the object store can reclaim the batch.
        images.clear()
        return rows


LabelerActor = ray.remote(LabelerReplica)


class LabelerPool:
    """A fixed set of replica actors; thread-safe least-loaded dispatch.

    Several shard tasks may feed the pool at once (Prefect runs them in
    threads). Each submit picks the actor with the fewest outstanding calls.
    """

    def __init__(
        self,
        labeler_name: str,
        options: LabelerOptions,
        replicas: int,
        placement: Placement,
    ) -> None:
        actor_cls = LabelerActor.options(
            num_cpus=placement.num_cpus,
            num_gpus=placement.num_gpus,
            max_restarts=3,
            max_task_retries=2,
            scheduling_strategy="SPREAD",  # replicas on every node before a second one on any
        )
        self.actors = [actor_cls.remote(labeler_name, options) for _ in range(replicas)]
        self._inflight: dict[Any, int] = {}  # result ref -> actor index, until done()
        self._lock = threading.Lock()
        self._tiebreak = itertools.count()
        # Fails here, with the labeler's own error, if setup() can't load the model.
        self.descriptions = ray.get([a.describe.remote() for a in self.actors])

    def submit(self, images_ref: Any, run_id: str, shard_id: str) -> Any:
        """Send a batch to the least-loaded replica; returns the result ref (hand it to `done` once collected)."""
        with self._lock:
            load = collections.Counter(self._inflight.values())
            index = min(range(len(self.actors)), key=lambda i: (load[i], next(self._tiebreak) % len(self.actors)))
            ref = self.actors[index].label.remote(images_ref, run_id, shard_id)
            self._inflight[ref] = index
        return ref

    def done(self, ref: Any) -> None:
        with self._lock:
            self._inflight.pop(ref, None)  # absent: already abandoned (an interrupt's shutdown)

    def abandon(self, refs: list[Any]) -> None:
        """Cancel batches nobody will collect and free their replicas' slots."""
        for ref in refs:
            ray.cancel(ref)
            self.done(ref)

    @property
    def size(self) -> int:
        return len(self.actors)

    def shutdown(self) -> None:
        # Cancel what is still in flight (an interrupt) first: a batch killed with its actor is
        # retried (max_task_retries) and Ray prints "Task ... failed, 2 retries remaining" for it.
        with self._lock:
            inflight = list(self._inflight)
        self.abandon(inflight)
        for actor in self.actors:
            ray.kill(actor)
