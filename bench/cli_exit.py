"""How long `humantag run` takes to exit once its summary is printed, against the same command
without the gc.freeze() exit hook (flows/cli.py main), in the same run.

    python bench/cli_exit.py [--images 16] [--rounds 3]

Each round runs the default command (local Ray, Prefect's temporary server, the cpu labeler)
on a few development scenes into a fresh folder, once as shipped and once with the hook left
out, and times the summary line to the process's exit. What remains after the freeze is
mostly Ray's own shutdown (it waits for its processes).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench.cli_exit")

WITHOUT_FREEZE = """
import atexit, gc, sys
register = atexit.register
atexit.register = lambda fn, *a, **k: fn if fn is gc.freeze else register(fn, *a, **k)
from humantag.flows import cli
sys.argv = ["humantag", *sys.argv[1:]]
cli.main()
"""
AS_SHIPPED = WITHOUT_FREEZE.replace("atexit.register = lambda", "_unused = lambda")


def exit_seconds(program: str, source: Path, out: Path) -> float:
    args = ["run", str(source), "--out", str(out), "--json", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", program, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    summary = proc.stdout.readline()
    started = time.monotonic()
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0 or not summary.startswith("{"):
        raise SystemExit(f"cli_exit: the run failed: {err[-500:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="humantag-bench-exit-") as scratch:
        source = Path(scratch) / "src"
        subprocess.run([sys.executable, "-m", "humantag.workers.devset", str(source), "--scenes", str(args.images)],
                       check=True, capture_output=True)
        times: dict[str, list[float]] = {"as shipped": [], "without gc.freeze": []}
        for round_index in range(args.rounds):
            for name, program in (("as shipped", AS_SHIPPED), ("without gc.freeze", WITHOUT_FREEZE)):
                times[name].append(exit_seconds(program, source, Path(scratch) / f"out-{name[:3]}-{round_index}"))
        for name, values in times.items():
            log.info("%-18s exit after the summary: median %.2f s  (%s)", name, statistics.median(values),
                     ", ".join(f"{v:.2f}" for v in values))
        log.info("as shipped / without: %.2fx", statistics.median(times["as shipped"]) / statistics.median(times["without gc.freeze"]))


if __name__ == "__main__":
    main()
