"""The flow in-process: objects vanishing after planning, lost actors, what is retried."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest
import ray

from humantag.flows.config import PoolConfig, RunConfig
from humantag.flows.label_archive import is_infrastructure_error, plan_run, run_label_archive
from humantag.flows.listing import SourceSpec
from humantag.workers.labelers import LabelerOptions
from humantag.workers.storage import StorageUnavailable

pytestmark = pytest.mark.slow


def _photos(folder, count):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((30, 40, 3), i * 7 % 255, np.uint8)).save(folder / f"{i:03d}.png")


def test_object_deleted_between_listing_and_reading_is_a_missing_row(tmp_path, ray_local):
    src, dest = tmp_path / "src", tmp_path / "out"
    _photos(src, 6)
    config = RunConfig(source=SourceSpec(url=str(src)), dest=str(dest), labeler="image-facts", shard_size=4, run_id="vanish")
    plan_run(config, "vanish")  # the listing is frozen in the manifest
    (src / "002.png").unlink()
    summary = run_label_archive(config)
    assert summary.total_images == 6 and summary.errors == {"missing": 1}
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in ds.dataset(str(dest / "labels")).to_table().to_pylist()}
    assert rows["002.png"]["status"] == "error" and rows["002.png"]["error_kind"] == "missing"
    assert sum(r["status"] == "ok" for r in rows.values()) == 5


def test_actor_killed_mid_shard_is_recovered_without_loss(tmp_path, ray_local, search_index):
    src, dest = tmp_path / "src", tmp_path / "out"
    _photos(src, 20)
    config = RunConfig(
        opensearch=search_index.settings,
        source=SourceSpec(url=str(src)), dest=str(dest), shard_size=10, run_id="crash",
        labeler="tests.fixtures.crashing_labeler:CrashOnceLabeler",
        labeler_options=LabelerOptions(batch_size=4, extra={"crash_flag": str(tmp_path / "crashed")}),
        pool=PoolConfig(replicas=1),
    )
    summary = run_label_archive(config)
    assert (tmp_path / "crashed").exists()  # the actor really died once
    assert summary.total_images == 20 and summary.ok == 20
    uris = [r["uri"] for r in ds.dataset(str(dest / "labels")).to_table().to_pylist()]
    assert len(uris) == len(set(uris)) == 20
    assert summary.index is not None and summary.index.ok
    assert search_index.count() == 20  # and one document per image


def test_only_infrastructure_errors_are_retried():
    assert is_infrastructure_error(StorageUnavailable("s3 timed out"))
    assert is_infrastructure_error(ray.exceptions.RayActorError())
    wrapped = RuntimeError("shard failed")
    wrapped.__cause__ = ConnectionError("reset")
    assert is_infrastructure_error(wrapped)
    assert not is_infrastructure_error(ValueError("a bug"))
    assert not is_infrastructure_error(KeyError("schema"))
