"""Ctrl-C and SIGTERM: stop within seconds, say so in one line, exit 130/143, keep every committed shard.

The flow runs in a thread; the main thread waits for it and turns SIGINT/SIGTERM
into KeyboardInterrupt. On one, the flow is asked to stop (it submits nothing more,
kills the replica pool and retries nothing), gets a few seconds to finish, then
the process exits without running the atexit hooks of Prefect and Ray.

Why not let them run: without PREFECT_API_URL, Prefect serves its API from a
child process in our process group. Ctrl-C in a terminal (and a scheduler that
signals the group) stops that server too, and Prefect's exit hooks then retry
its event websocket (`Unable to connect to ws://.../api/events/in`) for over a
minute before failing with an httpx traceback. Committed shards need none of it:
each Parquet file and marker is written atomically, and a rerun of the same
command resumes from the markers. With PREFECT_API_URL, the flow run is marked
Crashed with our line as its message before we go (as Prefect's engine marks a
run it sees interrupted), so the server never shows it Running or as a bug.

Once the command is done (`finishing`), a signal during those exit hooks (Ray's
shutdown waits seconds for its processes) ends the process at once and quietly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Optional, TypeVar

from humantag.flows import progress

T = TypeVar("T")
GRACE_S = 8.0  # for the flow to stop after the pool is killed, before the process exits anyway
_signal_received: Optional[int] = None
_hurry = threading.Event()  # a second signal came: stop waiting for the flow


def _raise_interrupt(signum: int, _frame: object) -> None:
    global _signal_received
    if _signal_received is not None:
        # Ctrl-C twice, or a wrapper such as `timeout` forwarding the signal it got: raised again
        # while the first is handled, it would unwind the main thread past our line into Python's
        # normal exit and its hooks. It only cuts the wait short.
        _hurry.set()
        return
    _signal_received = signum
    raise KeyboardInterrupt


def install() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread (remembering which one came)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _raise_interrupt)
        signal.signal(signal.SIGTERM, _raise_interrupt)


def finishing() -> None:
    """The command is done: a signal from here on (during Ray's and Prefect's exit hooks, which can
    take seconds) ends the process quietly with 130/143 instead of raising into those hooks."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _exit_quietly)
        signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, _frame: object) -> None:
    global _signal_received
    _signal_received = signum
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one must not interrupt the exit either
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # the hooks we cut short complain as they go
    logging.disable(logging.CRITICAL)
    # Not hard_exit: Ray's shutdown may be what we interrupted, and a second one would wait on it.
    # The local instance's processes are ended by flows/ray_reaper.py once we are gone.
    stopper = threading.Thread(target=_stop_prefect_temporary_server, daemon=True)
    stopper.start()
    stopper.join(6.0)
    sys.stdout.flush()
    os._exit(exit_code())


def exit_code() -> int:
    return 128 + (_signal_received or signal.SIGINT)


def message() -> str:
    state = progress.state
    if state.shards_total is None:
        return "humantag: interrupted before the plan was made; rerun the same command to resume"
    return (f"humantag: interrupted after {state.shards_done} of {state.shards_total} shards; "
            "rerun the same command to resume")


def run_interruptible(work: Callable[[], T]) -> T:
    """`work()` in a thread; on Ctrl-C/SIGTERM stop it, print one line and exit 130/143."""
    outcome: dict[str, object] = {}
    # Not thread.is_alive(): after a KeyboardInterrupt lands inside Thread.join, Python 3.11 may
    # report a running thread as stopped, and the grace below would never wait.
    finished = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=target, name="humantag-flow", daemon=True)
    ray_seen = False
    try:
        # Started inside the try: a signal that comes as soon as the flow is running (before the
        # main thread reaches its wait) must be handled like any other, not escape as a traceback.
        thread.start()
        while not finished.wait(0.2):
            if not ray_seen and _ray_started():
                # Ray's core worker installs its own C-level SIGTERM handler (it prints "*** SIGTERM received");
                # the flow starts Ray in its thread, so take the signal back from here, the main thread.
                ray_seen = True
                install()
    except KeyboardInterrupt:
        _stop(finished)
    if progress.state.stop.is_set():
        _stop(finished)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _stop(finished: threading.Event) -> None:
    # From here on only our line is printed: Ray workers and Prefect's clients complain as they go
    # down, and the flow thread starts failing as soon as it sees the stop, so silence comes first.
    stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    logging.disable(logging.CRITICAL)
    progress.state.stop.set()
    deadline = time.monotonic() + GRACE_S
    while not finished.wait(0.1) and not _hurry.is_set() and time.monotonic() < deadline:
        pass
    _report_crash_to_prefect_server()
    os.write(stderr, (message() + "\n").encode())
    hard_exit(exit_code())


def _report_crash_to_prefect_server(timeout_s: float = 3.0) -> None:
    """With PREFECT_API_URL, mark the flow run Crashed (as Prefect's engine does on a signal).
    Otherwise it shows Failed with our internal stop as the exception, or Running for good when
    the flow could not report within the grace before we exit."""
    flow_run_id = progress.state.flow_run_id
    if flow_run_id is None:
        return
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return  # the temporary server goes down with us: nobody will look

    def report() -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        why = f"{signal.Signals(exit_code() - 128).name}: {message().removeprefix('humantag: ')}"
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=why), force=True)

    reporter = threading.Thread(target=report, name="humantag-report-crash", daemon=True)
    reporter.start()
    reporter.join(timeout_s)  # an unreachable server must not hold up the exit


def hard_exit(code: int) -> None:
    """Stop what we started (Ray's local instance, Prefect's temporary server) and exit now."""
    sys.stdout.flush()
    stoppers = [threading.Thread(target=fn, daemon=True) for fn in (_stop_prefect_temporary_server, _shutdown_ray)]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join(6.0)
    os._exit(code)


def _stop_prefect_temporary_server() -> None:
    """Its uvicorn waits for open websockets before it exits: terminate, then kill."""
    if "prefect.server.api.server" not in sys.modules:
        return
    from prefect.server.api.server import SubprocessASGIServer

    for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
        process = getattr(server, "server_process", None)
        if process is None or process.poll() is not None:
            continue
        process.terminate()
        try:
            process.wait(2.0)
        except Exception:  # noqa: BLE001 - still up: no more patience
            process.kill()


def _shutdown_ray() -> None:
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
