"""pyarrow datasets read S3 through pyarrow's own filesystem (workers.storage.arrow_filesystem).

Through an fsspec filesystem pyarrow's IO threads need the GIL, while DuckDB scans a registered
dataset from a thread holding it (`Scanner.to_reader()`): a planning run deadlocked that way.
"""

from __future__ import annotations

import socket

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from humantag.workers.storage import StorageOptions, StorageUnavailable, arrow_filesystem, classify_storage_error, filesystem


def _options(s3_server, **overrides) -> StorageOptions:
    values = dict(endpoint_url=s3_server.endpoint, key=s3_server.access_key, secret=s3_server.secret_key, region="us-east-1")
    return StorageOptions(**(values | overrides))


def test_duckdb_scans_an_s3_dataset_through_pyarrows_filesystem(s3_server) -> None:
    bucket = s3_server.new_bucket("arrowfs")
    fs, root = filesystem(f"s3://{bucket}/labels", _options(s3_server))
    paths = []
    for part in range(4):
        path = f"{root}/part-{part}.parquet"
        with fs.open(path, "wb") as handle:
            pq.write_table(pa.table({"uri": [f"s3://x/{part}-{i}.jpg" for i in range(50)], "n": list(range(50))}), handle)
        paths.append(path)
    arrow_fs = arrow_filesystem(fs)
    assert isinstance(arrow_fs, pafs.S3FileSystem)
    dataset = ds.dataset(paths, filesystem=arrow_fs, format="parquet")
    con = duckdb.connect()
    try:
        con.register("labels", dataset)
        # Twice, as planning does (a join and a later query over the same registered dataset).
        for _ in range(2):
            assert con.sql("SELECT count(*), count(DISTINCT uri), sum(n) FROM labels").fetchall() == [(200, 200, 4 * sum(range(50)))]
    finally:
        con.close()


def test_local_paths_read_through_pyarrows_local_filesystem(tmp_path) -> None:
    fs, _ = filesystem(str(tmp_path))
    assert isinstance(arrow_filesystem(fs), pafs.LocalFileSystem)


def test_an_unreachable_s3_is_a_storage_outage_for_the_retry_loop(s3_server) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = _options(s3_server, endpoint_url=f"http://127.0.0.1:{port}", read_timeout_s=2.0)
    fs, root = filesystem("s3://nowhere/labels", options)
    with pytest.raises(Exception) as caught:
        ds.dataset([f"{root}/part-0.parquet"], filesystem=arrow_filesystem(fs), format="parquet").to_table()
    assert isinstance(classify_storage_error(caught.value), StorageUnavailable), caught.value
