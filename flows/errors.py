"""Errors the user can fix, and how a failed run is told: one line per cause, no traceback."""

from __future__ import annotations

import collections
import errno
import logging
from typing import Optional


class UserError(Exception):
    """A bad argument, an unreachable or empty source, an unwritable destination..."""


class ShardsFailed(RuntimeError):
    """Shards that failed after their retries; the labels of every other shard are committed."""

    def __init__(self, failures: list[tuple[str, Optional[BaseException]]]) -> None:
        self.failures = failures
        first_id, first = failures[0]
        super().__init__(f"{len(failures)} shard(s) failed after retries (first: {first_id}: {describe_cause(first)}); "
                         "rerun the same command to resume")


def root_causes(exc: Optional[BaseException]) -> list[BaseException]:
    """The chain from `exc` down (raise ... from, implicit context, a Ray task's cause)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 20:
        chain.append(exc)
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return chain


def describe_cause(exc: Optional[BaseException]) -> str:
    """One line for the most telling exception in `exc`'s chain."""
    from humantag.workers.storage import DestinationFull, StorageAccessDenied, StorageUnavailable

    chain = root_causes(exc)
    for item in chain:  # ours first: they were written to be read
        if isinstance(item, (DestinationFull, StorageUnavailable, StorageAccessDenied, UserError)):
            return _one_line(item.strerror if isinstance(item, DestinationFull) else str(item))
    for item in chain:
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {item.filename}" if item.filename else ""
            return f"no space left on the destination{where}"
    if not chain:
        return "unknown failure"
    last = chain[-1]
    text = str(last).strip()
    return _one_line(f"{type(last).__name__}: {text}" if text else type(last).__name__)


def format_failure(exc: BaseException) -> list[str]:
    """The lines a failed run ends with: one per distinct cause, with how many shards it hit."""
    if isinstance(exc, ShardsFailed):
        causes = collections.Counter(describe_cause(cause) for _, cause in exc.failures)
        return [f"{cause} ({count} shard(s) failed; rerun the same command to resume)" for cause, count in causes.most_common()]
    for item in root_causes(exc):
        if isinstance(item, ShardsFailed):
            return format_failure(item)
    return [describe_cause(exc)]


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class HideRunFailureLogs(logging.Filter):
    """Without -v, Prefect's own report of a failed task or flow (with its traceback) is not shown:
    the run ends with `format_failure`'s lines instead, said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.task_runs", "prefect.flow_runs")))
