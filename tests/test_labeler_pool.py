"""LabelerPool on the suite's Ray: dispatch bookkeeping, and an interrupt's shutdown."""

from __future__ import annotations

import time

import pytest
import ray

from humantag.workers.actors import LabelerPool
from humantag.workers.labelers import LabelerOptions
from humantag.workers.labelers.base import Placement

pytestmark = pytest.mark.slow


@ray.remote(num_cpus=0)
def _images_later(seconds: float) -> list:
    time.sleep(seconds)
    return []


def test_shutdown_cancels_batches_in_flight_instead_of_letting_ray_retry_them(ray_local) -> None:
    pool = LabelerPool("image-facts", LabelerOptions(), replicas=1, placement=Placement(num_cpus=0))
    slow_input = _images_later.remote(120)  # the batch waits on its input: in flight, as on an interrupt
    try:
        ref = pool.submit(slow_input, "run", "shard")
        pool.shutdown()
        started = time.monotonic()
        # Killed with its actor, the batch would be retried (max_task_retries) and end in ActorDiedError,
        # Ray printing "Task LabelerReplica.label failed. There are 2 retries remaining" under our last line.
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(ref, timeout=60)
        assert time.monotonic() - started < 30
        pool.done(ref)  # a shard thread collecting it afterwards is harmless
    finally:
        ray.cancel(slow_input, force=True)


def test_done_frees_the_replica_for_the_next_batch(ray_local) -> None:
    pool = LabelerPool("image-facts", LabelerOptions(), replicas=2, placement=Placement(num_cpus=0))
    try:
        first, second = pool.submit(ray.put([]), "run", "s"), pool.submit(ray.put([]), "run", "s")
        assert ray.get([first, second]) == [[], []]
        assert sorted(pool._inflight.values()) == [0, 1]  # least-loaded: one batch on each replica
        freed = pool._inflight[first]
        pool.done(first)
        third = pool.submit(ray.put([]), "run", "s")
        assert pool._inflight[third] == freed
        pool.abandon([second, third])
        assert pool._inflight == {}
    finally:
        pool.shutdown()
