"""Which run a command continues, and when it starts a new one.

A full run's id is derived from the command: rerunning it resumes it, and a
finished one is a no-op. An incremental run (nightly) must see what changed
since the last one, so each gets `inc-<command>-<UTC time>`; a rerun continues
the newest such run if it has no summary yet (it was interrupted), and starts
a new one otherwise.
"""

from __future__ import annotations

import datetime as dt

import fsspec

from humantag.flows.config import RunConfig, RunMode
from humantag.indexers.layout import OutputLayout


def resolve_run_id(config: RunConfig, fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> str:
    base = config.resolved_run_id()
    if config.run_id or config.mode is not RunMode.incremental:
        return base
    previous = []
    if fs.exists(layout.runs_dir):
        previous = sorted(
            p.rstrip("/").rsplit("/", 1)[-1]
            for p in fs.ls(layout.runs_dir, detail=False)
            if p.rstrip("/").rsplit("/", 1)[-1].startswith(base + "-")
        )
    if previous and not fs.exists(layout.summary_file(previous[-1])):
        return previous[-1]
    return f"{base}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
