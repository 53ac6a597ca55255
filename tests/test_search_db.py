"""The embedded search database follows DEST/labels: new, rewritten and removed label files, one row per uri."""

from __future__ import annotations

import datetime as dt
import os

from humantag.indexers.documents import document_id
from humantag.indexers.ledger import rewrite_shard
from humantag.indexers.parquet_sink import write_shard
from humantag.indexers.search.backends import open_backend
from humantag.indexers.search.embedded_backend import EmbeddedSearchBackend
from humantag.indexers.search.model import SearchRequest, parse_where
from humantag.indexers.search.search_db import SEARCH_DIR
from tests.test_search import LIVE, P, T0, dataset, image, uri, uris, write_dest
from humantag.workers.storage import filesystem


def found(engine, *where: str, **extra) -> list[str]:
    response = engine.search(SearchRequest(filters=[parse_where(w) for w in where], facets=[], size=100, **extra))
    return sorted(h.uri for h in response.hits)


def test_follows_new_rewritten_and_removed_files(tmp_path) -> None:
    root = str(tmp_path / "out")
    layout = write_dest(root, dataset())
    fs, _ = filesystem(root)
    engine = open_backend(root, None)
    assert isinstance(engine, EmbeddedSearchBackend)
    try:
        assert found(engine) == sorted(r.uri for r in LIVE)
        assert os.path.exists(os.path.join(root, SEARCH_DIR))

        # A new shard relabels img04 (newer labeled_at): its new row is the one found, once.
        newer = image(4, persons=[P(age_group="child", eyewear="sunglasses")], setting="beach", shard="s3",
                      labeled_at=T0 + dt.timedelta(days=1), caption="a child in sunglasses")
        write_shard(fs, layout.labels_file("s3"), [newer])
        assert found(engine, "person.age_group=child") == uris(4)
        assert found(engine, "person.eyewear=sunglasses") == uris(1, 2, 4, 9)
        assert found(engine, "person.eyewear=glasses", "person.age_group=child") == []
        assert engine.get(document_id(uri(4)))["caption"] == "a child in sunglasses"
        facets = engine.search(SearchRequest(facets=["person.eyewear"], size=0)).facets["person.eyewear"]
        assert {b.value: b.count for b in facets}["sunglasses"] == 4

        # A shard rewritten in place (img02 marked deleted): gone, unless deleted rows are asked for.
        rewrite_shard(fs, layout, "s1", delete_uris=[uri(2)], deleted_at=T0 + dt.timedelta(days=2))
        assert uri(2) not in found(engine)
        assert uri(2) in found(engine, include_deleted=True)
        assert engine.get(document_id(uri(2))) is None

        # A removed label file: its images go (img01..img04 were in s1; img04 lives on in s3).
        fs.rm(layout.labels_file("s1"))
        assert found(engine) == uris(4, 5, 6, 7, 9, 10)
    finally:
        engine.close()

    # A new process opens the same database file: nothing to read again, the same answers.
    again = open_backend(root, None)
    try:
        assert not again.db.refresh()
        assert found(again) == uris(4, 5, 6, 7, 9, 10)
    finally:
        again.close()
