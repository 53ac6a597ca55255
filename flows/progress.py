"""Progress of a run, reported by the flow and shown by whoever listens (the CLI's bar)."""

from __future__ import annotations

import threading
from typing import Protocol


class ProgressListener(Protocol):
    def start(self, total_images: int, already_done: int) -> None: ...
    def advance(self, images: int, errors: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def start(self, total_images: int, already_done: int) -> None:
        pass

    def advance(self, images: int, errors: int) -> None:
        pass

    def finish(self) -> None:
        pass


_lock = threading.Lock()
_listener: ProgressListener = _NoProgress()


def set_listener(listener: ProgressListener | None) -> None:
    global _listener
    with _lock:
        _listener = listener or _NoProgress()


def listener() -> ProgressListener:
    return _listener
