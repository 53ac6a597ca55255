"""End the local Ray instance's processes as soon as the driver that started it is gone.

Ray ties gcs_server and the raylet to the driver (PR_SET_PDEATHSIG), and its
workers follow the raylet; but the dashboard and runtime-env agents, on seeing
the raylet die, first try to report it to the GCS that died with it and only
exit after a hard-coded 60 s timeout (~200 MB for a minute after `kill -9`).
A small watchdog process, in its own session so a Ctrl-C to the driver's
process group does not reach it, holds the read end of a pipe whose write end
only the driver has: when the driver exits or is killed the pipe reads EOF,
and the watchdog ends the processes Ray started (matched by pid and start
time, so a reused pid is never touched).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Optional

log = logging.getLogger(__name__)

_watchdog: Optional[subprocess.Popen] = None  # referenced for the driver's lifetime: its stdin is the pipe

_REAPER = r"""
import json, select, signal, sys, time
sys.path.insert(0, sys.argv[3])  # Ray's bundled psutil
import psutil
targets = {pid: created for pid, created in json.loads(sys.argv[1])}
def alive():
    found = []
    for pid, created in list(targets.items()):
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
                continue
        except psutil.Error:
            pass
        del targets[pid]
    return found
while not select.select([sys.stdin], [], [], 1.0)[0]:  # readable only at EOF: the driver is gone
    for proc in alive():  # agents and workers the raylet starts later are followed too
        try:
            for child in proc.children(recursive=True):
                targets.setdefault(child.pid, child.create_time())
        except psutil.Error:
            pass
time.sleep(float(sys.argv[2]))  # a clean exit's ray.shutdown() goes first
for sig in (signal.SIGTERM, signal.SIGKILL):
    for proc in alive():
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass
    time.sleep(2)
"""


@contextlib.contextmanager
def tied_to_this_process(enabled: bool = True, grace_s: float = 2.0) -> Iterator[None]:
    """Around a local `ray.init()`: the processes it starts end with this one."""
    if not enabled:
        yield
        return
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _start_watchdog([(p.pid, p.create_time()) for p in started], grace_s)


def _start_watchdog(targets: list[tuple[int, float]], grace_s: float) -> Optional[subprocess.Popen]:
    global _watchdog
    import psutil  # Ray's bundled copy (ray/thirdparty_files) once ray is imported

    if not targets or (_watchdog is not None and _watchdog.poll() is None):
        return _watchdog
    _watchdog = subprocess.Popen(
        [sys.executable, "-c", _REAPER, json.dumps(targets), str(grace_s), os.path.dirname(os.path.dirname(psutil.__file__))],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )
    log.debug("ray watchdog %d for %d process(es)", _watchdog.pid, len(targets))
    return _watchdog
