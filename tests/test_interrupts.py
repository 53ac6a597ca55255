"""Ctrl-C and SIGTERM end a run in one line, also when the signal comes twice or the flow complains.

The CLI-level sequences (interrupted run, rerun: one row and one document per image) are in
tests/test_run_e2e.py; these drive flows/interrupts.py in a small process of its own, since it
ends the process it runs in."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

# A flow that goes down noisily (a log record and a traceback-like line on stderr as soon as it
# sees the stop, as Prefect and Ray do) and takes STOP_S to wind down after that.
FLOW = """
import logging, sys, time
from humantag.flows import interrupts, progress
interrupts.install()
def work():
    print("ready", flush=True)
    while not progress.state.stop.is_set():
        time.sleep(0.005)
    logging.getLogger("prefect.events.utilities").error("Error emitting event")
    print("Traceback (most recent call last): RuntimeError: can't register atexit after shutdown", file=sys.stderr, flush=True)
    time.sleep(float(sys.argv[1]))
    print("wound down", flush=True)
interrupts.run_interruptible(work)
"""
LINE = "humantag: interrupted before the plan was made; rerun the same command to resume"


def _flow(stop_s: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", FLOW, str(stop_s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("gap_s", [0.0, 0.05])
def test_two_signals_end_in_one_line_and_130(gap_s: float) -> None:
    # Back to back (a wrapper such as `timeout` forwarding the signal it got), or a second Ctrl-C
    # while the flow is being stopped: either way one line, exit 130, no traceback.
    proc = _flow()
    proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [LINE]


def test_sigterm_ends_in_one_line_and_143_after_the_flow_wound_down() -> None:
    # One signal: the flow gets its grace (here it needs 0.5 s of it) before the process exits.
    proc = _flow(stop_s=0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines() == [LINE]
    assert "wound down" in out


def test_a_signal_as_soon_as_the_flow_starts_is_handled_too() -> None:
    # Sent the moment the flow thread runs, before the main thread waits on it (a busy machine
    # makes that gap long): still one line and 130, never an escaped KeyboardInterrupt.
    for _ in range(5):
        proc = _flow(stop_s=0.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130
        assert err.strip().splitlines() == [LINE]


# The CLI's command() (what the executable's main() runs) on a command that is done at once, with a
# slow exit hook standing in for Ray's shutdown (it waits seconds for its processes) and Prefect's.
EXITING = """
import atexit, sys, time
from humantag.flows import cli
def slow_exit_hook():
    print("exiting", flush=True)
    time.sleep(30)
atexit.register(slow_exit_hook)
sys.argv = ["humantag", "--version"]
cli.command()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_the_exit_hooks_run_ends_quietly(sig: int) -> None:
    # A run that had just finished (its summary printed) when Ctrl-C came: Python was running the
    # atexit hooks, and the KeyboardInterrupt our handler raised escaped from them as a traceback.
    proc = subprocess.Popen([sys.executable, "-c", EXITING], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("humantag ")  # --version
    assert proc.stdout.readline().strip() == "exiting"
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert err == ""
    assert time.monotonic() - started < 15  # not the hook's 30 s


# The executable's main(): hooks registered during the command (Ray's shutdown, Prefect's server)
# still run, the exit code is the command's, and Python's finalization (its final garbage
# collection, ~2.5 s after a run) is skipped: an object in a reference cycle is never finalized.
ENDING = """
import atexit, sys
from humantag.flows import cli
class Cycle:
    def __del__(self):
        print("finalized", flush=True)
def command():
    atexit.register(lambda: print("hook ran", flush=True))
    cycle = Cycle(); cycle.me = cycle
    real_command()
real_command, cli.command = cli.command, command
sys.argv = ["humantag", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["run"], 2)], ids=["ok", "bad-argument"])
def test_the_executable_runs_the_exit_hooks_then_ends_without_finalization(args: list[str], code: int) -> None:
    proc = subprocess.run([sys.executable, "-c", ENDING, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.splitlines()[-1] == "hook ran"
    assert "finalized" not in proc.stdout
