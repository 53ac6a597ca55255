"""The live-row rule (indexers.ledger): its SQL and Python forms agree, and a commit never drops a newer row."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow.parquet as pq

from humantag.indexers.layout import OutputLayout
from humantag.indexers.ledger import current_rows, current_rows_sql, live_rows, live_rows_sql, rewrite_shard, row_key
from humantag.workers.records import LabeledImage, records_to_table
from humantag.workers.storage import filesystem

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _row(uri: str, shard: str, minutes: int, deleted: bool = False) -> LabeledImage:
    return LabeledImage(uri=uri, status="ok", labeler="image-facts", labeler_version="v1", run_id="r", shard_id=shard,
                        labeled_at=T0 + dt.timedelta(minutes=minutes),
                        deleted_at=T0 + dt.timedelta(days=1) if deleted else None)


ROWS = [
    _row("a", "s1", 1), _row("a", "s0", 2, deleted=True),  # deleted after its last labeling: not live
    _row("b", "s2", 5), _row("b", "s3", 5),  # same instant: the greater shard id wins
    _row("c", "s9", 9), _row("c", "s1", 3),  # the newer row wins, whichever file sorts first
    _row("d", "s4", 1, deleted=True), _row("d", "s5", 7),  # re-added after a deletion: live again
]


def test_sql_and_python_forms_of_the_rule_agree():
    table = records_to_table(ROWS)
    con = duckdb.connect()
    con.register("labels", table)
    sql_current = {r[0]: r[1] for r in con.sql(current_rows_sql("labels", "uri, shard_id")).fetchall()}
    sql_live = {r[0]: r[1] for r in con.sql(live_rows_sql("labels", "uri, shard_id")).fetchall()}
    rows = table.to_pylist()
    assert sql_current == {u: r["shard_id"] for u, r in current_rows(rows).items()} == {"a": "s0", "b": "s3", "c": "s9", "d": "s5"}
    assert sql_live == {u: r["shard_id"] for u, r in live_rows(rows).items()} == {"b": "s3", "c": "s9", "d": "s5"}


def test_a_commit_drops_only_rows_older_than_its_own(tmp_path):
    fs, root = filesystem(str(tmp_path))
    layout = OutputLayout(root)
    fs.makedirs(layout.labels_dir, exist_ok=True)
    pq.write_table(records_to_table([_row("x", "old", 5), _row("y", "old", 5)]), layout.labels_file("old"))
    newer, older = row_key({"labeled_at": T0 + dt.timedelta(minutes=6), "shard_id": "new"}), row_key(
        {"labeled_at": T0 + dt.timedelta(minutes=4), "shard_id": "stale-plan"})
    # A run whose plan predates the rows of `old` (its row of y is older) must leave y alone.
    assert rewrite_shard(fs, layout, "old", supersede={"x": newer, "y": older}) == 1
    assert pq.read_table(layout.labels_file("old")).column("uri").to_pylist() == ["y"]
    assert rewrite_shard(fs, layout, "old", supersede={"x": newer, "y": older}) == 0  # idempotent
