"""Backbone benchmark: the pipeline with the image-facts labeler vs a plain read+decode loop.

    python bench/pipeline_throughput.py [--images 2048] [--shard-size 256] [--dir /tmp/humantag-bench]

Prints, from one run on the same cores:
  * plain loop: read + decode (PIL, RGB) of every file in one process, and in a
    process pool of one worker per core (the best a hand-written script does);
  * pipeline: `label_archive` end to end (listing, plan, Ray decode tasks,
    replica actors, Parquet, markers), rate over the labeling phase and over the
    whole flow including planning and actor start-up;
  * orchestration overhead per shard: the same shards through Prefect tasks vs
    through a plain loop over `run_shard`, as a fraction of a shard's time.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

log = logging.getLogger("bench")


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) >= count:
        return existing[:count]
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024]
    for i in range(len(existing), count):
        # Smooth structure + texture: decodes like a photo, not like flat colour or pure noise.
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([np.sin(x / (40 + 7 * c) + y / (55 + 5 * c) + phase[c]) for c in range(3)], axis=-1)
        pixels = ((base + 1) * 110 + rng.normal(0, 12, (768, 1024, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:05d}.jpg", quality=88)
    return sorted(folder.glob("*.jpg"))[:count]


def _read_decode(path: Path) -> tuple[int, int]:
    with open(path, "rb") as fh:
        data = fh.read()
    import io

    img = Image.open(io.BytesIO(data))
    img.load()
    arr = np.asarray(img.convert("RGB"))
    return arr.shape[1], arr.shape[0]


def plain_loop(paths: list[Path]) -> float:
    started = time.perf_counter()
    for p in paths:
        _read_decode(p)
    return len(paths) / (time.perf_counter() - started)


def plain_pool(paths: list[Path], workers: int) -> float:
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_read_decode, paths, chunksize=32))
    return len(paths) / (time.perf_counter() - started)


def run_pipeline(src: Path, dest: Path, shard_size: int, replicas: int, shard_concurrency: int) -> dict:
    import datetime as dt

    from humantag.flows.config import PoolConfig, RunConfig
    from humantag.flows.label_archive import run_label_archive
    from humantag.flows.listing import SourceSpec
    from humantag.flows.shard_runner import load_markers
    from humantag.indexers.layout import OutputLayout
    from humantag.workers.labelers import LabelerOptions
    from humantag.workers.storage import filesystem

    shutil.rmtree(dest, ignore_errors=True)
    config = RunConfig(
        source=SourceSpec(url=str(src)), dest=str(dest), labeler="image-facts", shard_size=shard_size,
        shard_concurrency=shard_concurrency, labeler_options=LabelerOptions(batch_size=16),
        pool=PoolConfig(replicas=replicas), run_id="bench",
    )
    started = time.perf_counter()
    summary = run_label_archive(config)
    total = time.perf_counter() - started
    fs, root = filesystem(str(dest))
    markers = list(load_markers(fs, OutputLayout(root), "bench").values())
    first = min(dt.datetime.fromisoformat(m.started_at) for m in markers)
    last = max(dt.datetime.fromisoformat(m.finished_at) for m in markers)
    return {
        "images": summary.images_this_run,
        "total_s": total,
        "labeling_s": (last - first).total_seconds(),
        "shard_s": [m.wall_s for m in markers],
    }


def plain_shard_loop(src: Path, dest: Path, shard_size: int, replicas: int, shard_concurrency: int) -> dict:
    """The same shards and pool, driven by plain threads instead of Prefect tasks."""
    from concurrent.futures import ThreadPoolExecutor

    from humantag.flows.config import PoolConfig, RunConfig
    from humantag.flows.label_archive import plan_run
    from humantag.flows.listing import SourceSpec
    from humantag.flows.shard_runner import run_shard
    from humantag.indexers.layout import OutputLayout
    from humantag.workers.actors import LabelerPool
    from humantag.workers.labelers import LabelerOptions, create_labeler
    from humantag.workers.labelers.base import Placement
    from humantag.workers.storage import filesystem

    shutil.rmtree(dest, ignore_errors=True)
    config = RunConfig(
        source=SourceSpec(url=str(src)), dest=str(dest), labeler="image-facts", shard_size=shard_size,
        labeler_options=LabelerOptions(batch_size=16), pool=PoolConfig(replicas=replicas), run_id="bench",
    )
    fs, root = filesystem(str(dest))
    layout = OutputLayout(root)
    plan = plan_run(config, "bench")
    pool = LabelerPool("image-facts", config.labeler_options, replicas, Placement(num_cpus=1))
    decode = config.decode.model_copy(update={"max_side": create_labeler("image-facts").decode_max_side})
    def one(shard):
        t0 = time.perf_counter()
        run_shard(shard, pool, config, decode, fs, layout, "bench")
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(shard_concurrency) as threads:
        times = list(threads.map(one, plan.shards))
    elapsed = time.perf_counter() - started
    pool.shutdown()
    return {"labeling_s": elapsed, "shard_s": times, "images": plan.total_objects}


def prefect_task_seconds(tasks: int = 64, concurrency: int = 2) -> float:
    """Wall time one Prefect task adds around its body: empty tasks through the flow's task runner."""
    from prefect import flow, task
    from prefect.cache_policies import NONE as NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(cache_policy=NO_CACHE)
    def empty(i: int) -> int:
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=concurrency))
    def many() -> float:
        started = time.perf_counter()
        for future in [empty.submit(i) for i in range(tasks)]:
            future.result()
        return time.perf_counter() - started

    many()  # warm-up: the first flow starts Prefect's local API
    return many() * concurrency / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/humantag-bench")
    parser.add_argument("--rounds", type=int, default=3, help="Prefect vs plain-thread runs, alternated; medians reported")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = Path(args.dir)
    src = root / "images"
    t0 = time.perf_counter()
    paths = make_images(src, args.images)
    print(f"images: {len(paths)} JPEGs 1024x768 in {src} (ready in {time.perf_counter() - t0:.0f}s)")
    cores = os.cpu_count() or 1

    from humantag.flows.ray_runtime import ensure_ray

    ensure_ray()
    plain_loop(paths[:64])  # warm the page cache
    # Warm-up: Ray starts its worker processes for the decode tasks on first use; neither
    # measured variant should pay for that.
    warm = root / "warm"
    warm.mkdir(exist_ok=True)
    for p in paths[:64]:
        if not (warm / p.name).exists():
            os.link(p, warm / p.name)
    run_pipeline(warm, root / "out-warm", 16, args.replicas, shard_concurrency=2)

    pipes, directs, loop_rates, pool_rates = [], [], [], []
    for r in range(args.rounds):  # alternate, so drift on a shared machine hits every variant alike
        loop_rates.append(plain_loop(paths))
        pool_rates.append(plain_pool(paths, cores))
        order = [("pipe", run_pipeline), ("direct", plain_shard_loop)]
        for kind, runner in order if r % 2 == 0 else order[::-1]:
            result = runner(src, root / f"out-{kind}", args.shard_size, args.replicas, shard_concurrency=2)
            (pipes if kind == "pipe" else directs).append(result)
    pipe = {"images": pipes[0]["images"], "labeling_s": statistics.median(p["labeling_s"] for p in pipes),
            "total_s": statistics.median(p["total_s"] for p in pipes)}
    direct = {"images": directs[0]["images"], "labeling_s": statistics.median(d["labeling_s"] for d in directs),
              "shard_s": [s for d in directs for s in d["shard_s"]]}
    n_shards = len(directs[0]["shard_s"])
    loop_rate, pool_rate = statistics.median(loop_rates), statistics.median(pool_rates)
    mean_shard = statistics.mean(direct["shard_s"])
    task_s = prefect_task_seconds()

    rate = pipe["images"] / pipe["labeling_s"]
    e2e_rate = pipe["images"] / pipe["total_s"]
    direct_rate = direct["images"] / direct["labeling_s"]
    overhead = (pipe["labeling_s"] - direct["labeling_s"]) / n_shards / mean_shard

    print(f"\ncores: {cores}; shard size {args.shard_size}; replicas {args.replicas}; {n_shards} shards, 2 in flight; "
          f"medians of {args.rounds} alternated rounds")
    print(f"{'plain read+decode loop (1 process)':<56}{loop_rate:8.1f} img/s  baseline 1.00")
    print(f"{'plain read+decode, process pool of ' + str(cores):<56}{pool_rate:8.1f} img/s  ratio {pool_rate / loop_rate:5.2f}")
    print(f"{'pipeline: label_archive, labeling phase':<56}{rate:8.1f} img/s  ratio {rate / loop_rate:5.2f}")
    print(f"{'pipeline: label_archive, end to end (+plan, start-up)':<56}{e2e_rate:8.1f} img/s  ratio {e2e_rate / loop_rate:5.2f}")
    print(f"{'pipeline: same shards in plain threads, no Prefect':<56}{direct_rate:8.1f} img/s  ratio {direct_rate / loop_rate:5.2f}")
    print(f"\nlabeling phase (median of {args.rounds}): {pipe['labeling_s']:.2f}s with Prefect tasks, "
          f"{direct['labeling_s']:.2f}s with plain threads; mean shard {mean_shard:.2f}s")
    per_round = ", ".join(f"{p['labeling_s']:.2f}/{d['labeling_s']:.2f}" for p, d in zip(pipes, directs))
    print(f"  per round, Prefect/plain seconds: {per_round}; plain loop img/s: {', '.join(f'{r:.0f}' for r in loop_rates)}")
    print(f"orchestration overhead per shard, Prefect vs plain threads: {overhead * 100:.1f}% of a shard's time (target <= 2%)")
    print(f"Prefect's own cost per task (empty tasks, 2 in flight): {task_s * 1000:.0f} ms = "
          f"{task_s / mean_shard * 100:.1f}% of a {args.shard_size}-image shard")
    print(f"pipeline / plain loop: {rate / loop_rate:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
