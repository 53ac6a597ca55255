"""How long `humantag run` takes to exit once its summary is printed, against the same command
left to Python's own exit (flows/cli.py: `command()` without `main()`'s last exit hook), in the same run.

    python bench/cli_exit.py [--images 16] [--rounds 3]

Each round runs the default command (local Ray, Prefect's temporary server, the cpu labeler)
on a few development scenes into a fresh folder, once as shipped and once without that hook,
and times the summary line to the process's exit. What remains as shipped is mostly Ray's
own shutdown (it waits for its processes).
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

AS_SHIPPED = """
import sys
from humantag.flows import cli
sys.argv = ["humantag", *sys.argv[1:]]
cli.main()
"""
WITHOUT = AS_SHIPPED.replace("cli.main()", "cli.command()")  # the same CLI, left to Python's own exit


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
        times: dict[str, list[float]] = {"as shipped": [], "Python's own exit": []}
        for round_index in range(args.rounds):
            for name, program in (("as shipped", AS_SHIPPED), ("Python's own exit", WITHOUT)):
                times[name].append(exit_seconds(program, source, Path(scratch) / f"out-{name[:3]}-{round_index}"))
        for name, values in times.items():
            log.info("%-18s exit after the summary: median %.2f s  (%s)", name, statistics.median(values),
                     ", ".join(f"{v:.2f}" for v in values))
        log.info("as shipped / Python's own exit: %.2fx", statistics.median(times["as shipped"]) / statistics.median(times["Python's own exit"]))


if __name__ == "__main__":
    main()
