"""Progress of a run, reported by the flow and shown by whoever listens (the CLI's bar).

Also the run's shared state between the flow and the process driving it: shards
done of the plan (for the "interrupted after N of M shards" line), when a batch
last finished (for the stall warning), and the stop request of an interrupt.
"""

from __future__ import annotations

import threading
import time
from typing import Optional, Protocol


class ProgressListener(Protocol):
    def run_started(self, run_id: str, flow_run_url: Optional[str]) -> None: ...
    def start(self, total_images: int, already_done: int) -> None: ...
    def advance(self, images: int, errors: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    """Listens to nothing; subclass it to hear only some events."""

    def run_started(self, run_id: str, flow_run_url: Optional[str]) -> None:
        pass

    def start(self, total_images: int, already_done: int) -> None:
        pass

    def advance(self, images: int, errors: int) -> None:
        pass

    def finish(self) -> None:
        pass


class RunState:
    """What the process knows about the run in progress (one run per process)."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # set on Ctrl-C/SIGTERM: submit nothing more, retry nothing
        self.shards_total: Optional[int] = None
        self.shards_done = 0
        self.last_progress = time.monotonic()
        self.flow_run_id: Optional[str] = None  # the Prefect flow run, to report an interrupt to its server

    def planned(self, total: int, done: int) -> None:
        self.shards_total, self.shards_done = total, done
        self.last_progress = time.monotonic()

    def shard_done(self) -> None:
        self.shards_done += 1


_lock = threading.Lock()
_listener: ProgressListener = NoProgress()
state = RunState()


def set_listener(listener: ProgressListener | None) -> None:
    global _listener
    with _lock:
        _listener = listener or NoProgress()


def listener() -> ProgressListener:
    return _listener


def batch_done(images: int, errors: int) -> None:
    state.last_progress = time.monotonic()
    _listener.advance(images, errors)
