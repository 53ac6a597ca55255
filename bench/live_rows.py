"""What one live row per uri costs: planning a full rerun against the ledger, and reading by the rule.

    python bench/live_rows.py [--objects 100000] [--shard-size 256] [--rounds 3]

Builds, in a temporary folder, an output of N rows (N/shard-size label files, written as the
sink writes them) and a listing of the same N objects, then times, alternating the variants
each round and reporting medians:
  * planning a full run: without a ledger (a first run: no join; the baseline) and against the
    ledger (a rerun: the DuckDB join that finds every older row each commit must drop);
  * DuckDB over the label files, as the Parquet search backend reads them: every row with
    `deleted_at IS NULL` (before; the baseline) and the live rows by `indexers.ledger.live_rows_sql`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from humantag.flows.incremental import build_full_plan  # noqa: E402
from humantag.flows.listing import SourceSpec  # noqa: E402
from humantag.indexers.layout import OutputLayout  # noqa: E402
from humantag.indexers.ledger import live_rows_sql  # noqa: E402
from humantag.workers.loader import SourceObject  # noqa: E402
from humantag.workers.records import LabeledImage, records_to_table  # noqa: E402
from humantag.workers.storage import filesystem  # noqa: E402


def make_output(root: Path, objects: list[SourceObject], shard_size: int) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    template = records_to_table([LabeledImage(uri="x", status="ok", labeler="image-facts", labeler_version="v1",
                                              run_id="bench", shard_id="x", labeled_at=now)])
    (root / "labels").mkdir(parents=True)
    for start in range(0, len(objects), shard_size):
        chunk = objects[start:start + shard_size]
        shard_id = f"s{start // shard_size:06d}-bench"
        table = template.take([0] * len(chunk))
        table = table.set_column(table.schema.get_field_index("uri"), "uri", pa.array([o.uri for o in chunk]))
        table = table.set_column(table.schema.get_field_index("shard_id"), "shard_id", pa.array([shard_id] * len(chunk)))
        pq.write_table(table, root / "labels" / f"{shard_id}.parquet", compression="zstd")


def time_plan(objects: list[SourceObject], url: str, out: Path, ledger: Path | None, run: str) -> float:
    fs, root = filesystem(str(out))
    ledger_at = (fs, OutputLayout(str(ledger))) if ledger else (fs, OutputLayout(str(out / "empty")))
    started = time.perf_counter()
    build_full_plan(iter(objects), SourceSpec(url=url), fs, OutputLayout(root), run, 256, ledger_at=ledger_at)
    return time.perf_counter() - started


def time_query(files: list[str], live: bool) -> float:
    import duckdb

    con = duckdb.connect()
    listing = ", ".join(f"'{f}'" for f in files)
    con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet([{listing}])")
    base = live_rows_sql("labels") if live else "SELECT * FROM labels WHERE deleted_at IS NULL"
    started = time.perf_counter()
    count = con.sql(f"SELECT count(*), count(DISTINCT uri) FROM ({base})").fetchall()[0]
    elapsed = time.perf_counter() - started
    con.close()
    assert count[0] == count[1], count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="humantag-bench-") as tmp:
        tmp_path = Path(tmp)
        url = str(tmp_path / "src")
        objects = [SourceObject(uri=f"file://{url}/{i:08d}.jpg", size_bytes=1000 + i, etag=None, mtime=1.7e9 + i)
                   for i in range(args.objects)]
        make_output(tmp_path / "out", objects, args.shard_size)
        files = sorted(str(p) for p in (tmp_path / "out" / "labels").glob("*.parquet"))
        plans: dict[str, list[float]] = {"first": [], "rerun": []}
        queries: dict[str, list[float]] = {"filter": [], "live": []}
        for round_ in range(args.rounds):
            plans["first"].append(time_plan(objects, url, tmp_path / f"plan-a{round_}", None, "a"))
            plans["rerun"].append(time_plan(objects, url, tmp_path / f"plan-b{round_}", tmp_path / "out", "b"))
            queries["filter"].append(time_query(files, live=False))
            queries["live"].append(time_query(files, live=True))
        med = {k: statistics.median(v) for k, v in (plans | queries).items()}
        print(f"{args.objects:,} objects in {len(files)} label files; medians of {args.rounds} alternated rounds")
        print(f"plan a full run, no ledger (first run)             {med['first']:7.2f}s  baseline 1.00")
        print(f"plan a full run against the ledger (rerun)         {med['rerun']:7.2f}s  ratio  {med['rerun'] / med['first']:.2f}")
        print(f"DuckDB: rows WHERE deleted_at IS NULL (before)     {med['filter'] * 1000:7.1f}ms baseline 1.00")
        print(f"DuckDB: live rows by the rule (live_rows_sql)      {med['live'] * 1000:7.1f}ms ratio  {med['live'] / med['filter']:.2f}")


if __name__ == "__main__":
    main()
