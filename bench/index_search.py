"""OpenSearch: documents/s indexed from Parquet vs `helpers.bulk`, and search latency at 100,000 documents;
the embedded search database against DuckDB over the Parquet files.

    python bench/index_search.py [--docs 20000] [--rounds 5] [--search-docs 100000] [--queries 100]
    OPENSEARCH_URL=http://localhost:9200 python bench/index_search.py   # a real cluster instead of osmem
    python bench/index_search.py --embedded 100000,1000000 [--queries 100] [--baseline-queries 20]

3. Embedded (`--embedded N,M`: only this part, no OpenSearch). N synthetic images are written as
   shards of 256 (4 per cent of them deleted); the same filtered, faceted searches run through the
   embedded search database (DEST/_search, built on the first search: its build time is printed
   apart) and through DuckDB over the Parquet files (the engine before it; --baseline-queries of
   them, as it takes seconds per search at 1M). p50/p95 of each and the ratio, in the same run.

1. Throughput. The same labeled rows are written as Parquet shards of 256.
   Baseline: opensearch-py's `helpers.bulk` on the documents already built in
   memory (no reading, no conversion), 10 MB requests. Ours: `sync_index`
   reading the Parquet shards, converting rows, writing per-shard markers.
   Rounds alternate the two into fresh indices on the same server; the
   ratio ours/baseline is printed per round and as the median.
2. Latency. `--search-docs` documents are indexed, then `--queries` filtered
   and faceted searches (nested person filters, ranges, text, the default
   facets) run through the OpenSearch backend and through the embedded DuckDB
   engine over the same Parquet; p50/p95 printed, and as a ratio to the floor
   of the same server (a bare match_all for 20 hits) measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import fsspec  # noqa: E402

from humantag.indexers.documents import document_id, row_to_document  # noqa: E402
from humantag.indexers.layout import OutputLayout  # noqa: E402
from humantag.indexers.opensearch.aliases import IndexNames, ensure_index  # noqa: E402
from humantag.indexers.opensearch.settings import OpenSearchSettings  # noqa: E402
from humantag.indexers.opensearch.sync import sync_index  # noqa: E402
from humantag.indexers.parquet_sink import write_shard  # noqa: E402
from humantag.workers.attributes import Box, Person, Scene, literal_values, PersonAttributes  # noqa: E402
from humantag.workers.records import LabeledImage  # noqa: E402

SHARD = 256
CAPTIONS = [
    "two people walking on a beach in the sun", "a smiling child in a red jacket in a park",
    "a man in sunglasses and a blue shirt on a city street", "a woman with long brown hair in an office",
    "a group of people at an outdoor event", "an empty room with a table", "a person riding a bicycle in the snow",
]


def synthetic_rows(count: int, seed: int = 1, start: int = 0) -> list[LabeledImage]:
    rng = random.Random(seed * 1_000_003 + start)
    fields = PersonAttributes.model_fields
    values = {name: literal_values(fields[name].annotation) for name in ("age_group", "expression", "eyewear", "headwear",
                                                                          "upper_clothing", "upper_clothing_color", "pose")}
    now = dt.datetime(2026, 5, 1, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(start, start + count):
        persons = [
            Person(**{k: rng.choice(v) for k, v in values.items()}, smiling=rng.random() < 0.4, face_visible=rng.random() < 0.8,
                   face_box=Box(x=rng.randrange(900), y=rng.randrange(600), w=60, h=60, score=rng.random()))
            for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3, 5)))
        ]
        shard = f"{i // SHARD:05d}-bench"
        rows.append(LabeledImage(
            uri=f"s3://media/archive/{i % 97:02d}/{i:07d}.jpg", etag=f"{i:x}", size_bytes=200_000 + i, width=1024, height=768,
            status="ok" if i % 50 else "error", error_kind=None if i % 50 else "truncated", labeler="cpu",
            labeler_version="cpu/1", run_id="bench", shard_id=shard, labeled_at=now, caption=rng.choice(CAPTIONS),
            people_count=len(persons), persons=persons, deleted_at=now if i % 25 == 7 else None,
            scene=Scene(environment=rng.choice(("indoor", "outdoor")), setting=rng.choice(("beach", "street", "office", "park"))),
        ))
    return rows


def write_dest(rows: list[LabeledImage], root: str) -> tuple[fsspec.AbstractFileSystem, OutputLayout]:
    fs = fsspec.filesystem("file")
    layout = OutputLayout(root)
    for start in range(0, len(rows), SHARD):
        chunk = rows[start : start + SHARD]
        write_shard(fs, layout.labels_file(chunk[0].shard_id), chunk)
    return fs, layout


def baseline_bulk(settings: OpenSearchSettings, documents: list[tuple[str, dict]]) -> float:
    from opensearchpy import helpers

    client = settings.client()
    target = ensure_index(client, IndexNames(settings.index))
    actions = ({"_index": target, "_id": doc_id, "_source": doc} for doc_id, doc in documents)
    started = time.perf_counter()
    helpers.bulk(client, actions, chunk_size=100_000, max_chunk_bytes=settings.bulk_bytes)
    client.indices.refresh(index=target)
    return time.perf_counter() - started


def ours(settings: OpenSearchSettings, fs: fsspec.AbstractFileSystem, layout: OutputLayout) -> float:
    ensure_index(settings.client(), IndexNames(settings.index))  # same set-up cost outside the timing as the baseline
    started = time.perf_counter()
    report = sync_index(settings, fs, layout, "bench")
    elapsed = time.perf_counter() - started
    assert report.ok, report
    return elapsed


def throughput(url: str, docs: int, rounds: int) -> None:
    rows = synthetic_rows(docs)
    documents = [(document_id(r.uri), row_to_document(r.model_dump())) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        fs, layout = write_dest(rows, tmp)
        ratios = []
        print(f"indexing {docs:,} documents, {rounds} round(s), 10 MB bulk requests")
        print(f"{'round':>5} {'helpers.bulk docs/s':>20} {'humantag docs/s':>16} {'ratio':>6}")
        for r in range(rounds):
            base_settings = OpenSearchSettings(urls=url, index=f"bench-base-{r}-{os.getpid()}")
            our_settings = OpenSearchSettings(urls=url, index=f"bench-ours-{r}-{os.getpid()}")
            if r % 2:
                t_ours = ours(our_settings, fs, layout)
                t_base = baseline_bulk(base_settings, documents)
            else:
                t_base = baseline_bulk(base_settings, documents)
                t_ours = ours(our_settings, fs, layout)
            fs.rm(f"{tmp}/_index", recursive=True)
            for s in (base_settings, our_settings):
                s.client().indices.delete(index=f"{s.index}-v*")
            ratio = t_base / t_ours
            ratios.append(ratio)
            print(f"{r + 1:>5} {docs / t_base:>20,.0f} {docs / t_ours:>16,.0f} {ratio:>6.2f}")
        print(f"median ratio humantag/helpers.bulk: {statistics.median(ratios):.2f} (target >= 0.9)")


def _timed(run, requests) -> list[float]:
    timings = []
    for request in requests:
        started = time.perf_counter()
        run(request)
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def _percentiles(timings: list[float]) -> tuple[float, float]:
    return timings[len(timings) // 2], timings[max(0, int(len(timings) * 0.95) - 1)]


def latency(url: str, docs: int, queries: int) -> None:
    from humantag.indexers.search.backends import open_backend
    from humantag.indexers.search.model import SearchRequest, parse_where

    rows = synthetic_rows(docs, seed=2)
    settings = OpenSearchSettings(urls=url, index=f"bench-search-{os.getpid()}")
    rng = random.Random(3)
    where_choices = [
        ["people_count>=2", "person.eyewear=sunglasses"],
        ["person.eyewear=sunglasses", "person.smiling=true"],
        ["scene.environment=outdoor", "person.upper_clothing_color=red"],
        ["people_count=0"],
        ["person.age_group=child", "scene.setting=park,beach"],
        ["status=error"],
        ["people_count>=1", "person.face_visible=false", "scene.setting!=office"],
    ]
    texts = [None, None, "beach", "red jacket", "sunglasses street"]
    requests = [SearchRequest(filters=[parse_where(w) for w in rng.choice(where_choices)], text=rng.choice(texts), size=20)
                for _ in range(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        fs, layout = write_dest(rows, tmp)
        del rows
        started = time.perf_counter()
        report = sync_index(settings, fs, layout, "bench")
        print(f"\nindexed {report.documents_indexed:,} documents for the search test in {time.perf_counter() - started:.1f}s")
        client = settings.client()
        floor = _timed(lambda _: client.search(index=settings.index, body={"size": 20, "query": {"match_all": {}}}), requests)
        results = {"floor: match_all, 20 hits, no facets": floor}
        for name, backend in (("OpenSearch backend", open_backend(None, settings)), ("DuckDB over Parquet", open_backend(tmp, None))):
            results[f"{name}, filters + default facets"] = _timed(backend.search, requests)
            backend.close()
    settings.client().indices.delete(index=f"{settings.index}-v*")
    base_p50, _ = _percentiles(floor)
    print(f"{queries} searches on {docs:,} documents (same queries, same order):")
    print(f"{'':48} {'p50 ms':>9} {'p95 ms':>9} {'p50 / floor':>12}")
    for name, timings in results.items():
        p50, p95 = _percentiles(timings)
        print(f"{name:48} {p50:>9.1f} {p95:>9.1f} {p50 / base_p50:>12.1f}")


def _requests(queries: int) -> list:
    from humantag.indexers.search.model import SearchRequest, parse_where
    from humantag.indexers.search.plain import interpret

    rng = random.Random(3)
    where_choices = [
        ["people_count>=2", "person.eyewear=sunglasses"],
        ["person.eyewear=sunglasses", "person.smiling=true"],
        ["scene.environment=outdoor", "person.upper_clothing_color=red"],
        ["people_count=0"],
        ["person.age_group=child", "scene.setting=park,beach"],
        ["status=error"],
        ["people_count>=1", "person.face_visible=false", "scene.setting!=office"],
        [],
    ]
    plain = ["two people, one in sunglasses, on a beach", "a child in a red jacket", "no face visible"]
    texts = [None, None, "beach", "red jacket", "sunglasses street"]
    requests = []
    for i in range(queries):
        if i % 5 == 4:
            requests.append(SearchRequest(filters=interpret(rng.choice(plain)).filters, size=20))
        else:
            requests.append(SearchRequest(filters=[parse_where(w) for w in rng.choice(where_choices)],
                                          text=rng.choice(texts), size=20))
    return requests


def embedded(sizes: list[int], queries: int, baseline_queries: int) -> None:
    from humantag.indexers.search.backends import open_backend
    from humantag.indexers.search.embedded_backend import EmbeddedSearchBackend
    from humantag.indexers.search.parquet_backend import ParquetSearchBackend

    requests = _requests(queries)
    print(f"{'images':>10} {'engine':34} {'searches':>8} {'p50 ms':>9} {'p95 ms':>9}")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            fs, layout = fsspec.filesystem("file"), OutputLayout(tmp)
            started = time.perf_counter()
            for start in range(0, size, SHARD):
                chunk = synthetic_rows(min(SHARD, size - start), seed=2, start=start)
                write_shard(fs, layout.labels_file(chunk[0].shard_id), chunk)
            written = time.perf_counter() - started
            engine = open_backend(tmp, None)
            assert isinstance(engine, EmbeddedSearchBackend)
            started = time.perf_counter()
            engine.db.refresh()
            built = time.perf_counter() - started
            ours = _timed(engine.search, requests)
            scan = ParquetSearchBackend(tmp)
            theirs = _timed(scan.search, requests[:baseline_queries])
            for request in requests[:3]:  # the same answers
                assert engine.search(request).total == scan.search(request).total
            engine.close()
            scan.close()
        print(f"({size:,} images written in {written:.0f}s; search database built on first use in {built:.1f}s)")
        (p50, p95), (b50, b95) = _percentiles(ours), _percentiles(theirs)
        print(f"{size:>10,} {'embedded search database':34} {len(ours):>8} {p50:>9.1f} {p95:>9.1f}")
        print(f"{size:>10,} {'DuckDB over the Parquet files':34} {len(theirs):>8} {b50:>9.1f} {b95:>9.1f}")
        print(f"{'':>10} {'p50 ratio Parquet / embedded':34} {'':>8} {b50 / p50:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--search-docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--embedded", default="", help="image counts, e.g. 100000,1000000: only the embedded-engine part")
    parser.add_argument("--baseline-queries", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.embedded:
        embedded([int(n) for n in args.embedded.split(",")], args.queries, args.baseline_queries)
        return
    url = os.environ.get("OPENSEARCH_URL")
    server = None
    if not url:
        from osmem_server import OsmemServer

        server = OsmemServer.start(japanese=False)
        url = server.url
        print(f"osmem-server {server.version} on {url}")
    try:
        throughput(url, args.docs, args.rounds)
        if args.search_docs:
            latency(url, args.search_docs, args.queries)
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
