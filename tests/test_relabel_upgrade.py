"""A HumanVLM upgrade relabels what it should, on real Ray + Prefect with SeaweedFS as the source;
and a dry-run backfill never copies the weights to the driver."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from PIL import Image

from humantag.flows.config import RunConfig
from humantag.flows.label_archive import run_label_archive
from humantag.flows.listing import SourceSpec
from tests.fixtures.cli import run_cli
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.storage import StorageOptions

pytestmark = pytest.mark.slow
IMAGES = 4


def _upload_photos(s3, bucket: str) -> None:
    client = s3.client()
    for i in range(IMAGES):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
        client.put_object(Bucket=bucket, Key=f"photos/{i}.jpg", Body=buf.getvalue())
    client.put_object(Bucket=bucket, Key="photos/broken.jpg", Body=b"not a jpeg")


def _config(bucket: str, dest: Path, model: Path, cache: Path, max_persons: int, **mode) -> RunConfig:
    return RunConfig(
        source=SourceSpec(url=f"s3://{bucket}/photos"), dest=str(dest), labeler="humanvlm",
        labeler_options=LabelerOptions(model=str(model), batch_size=IMAGES, device="cpu", extra={
            "max_persons": max_persons, "caption_max_new_tokens": 4, "cache_dir": str(cache)}),
        shard_size=3, storage=StorageOptions.from_env(), **mode,
    )


def _live(dest: Path) -> dict[str, dict]:
    rows = [r for r in ds.dataset(str(dest / "labels")).to_table().to_pylist() if r["deleted_at"] is None]
    assert len(rows) == len({r["uri"] for r in rows}), "two live rows for one uri"
    return {r["uri"].rsplit("/", 1)[1]: r for r in rows}


def test_prompt_upgrade_relabels_every_labeled_row_once(s3_env, ray_local, tiny_llava_dir: Path, tmp_path: Path) -> None:
    bucket = s3_env.new_bucket("upgrade")
    _upload_photos(s3_env, bucket)
    dest, cache = tmp_path / "out", tmp_path / "cache"

    def run(max_persons: int, **mode):
        config = _config(bucket, dest, tiny_llava_dir, cache, max_persons, **mode)
        return run_label_archive(config), create_labeler(config.labeler, config.labeler_options).identity()

    first, v1 = run(2, incremental=True)
    assert first.plan["new"] == IMAGES + 1 and first.images_this_run == IMAGES + 1
    rows = _live(dest)
    assert rows.pop("broken.jpg")["error_kind"] == "not_an_image"
    # The driver's identity (options only) is exactly what the actors stamped after loading.
    assert {(r["status"], r["labeler_version"], r["prompt_version"]) for r in rows.values()} == {("ok", v1.version, v1.prompt_version)}

    # max_persons changes the attribute schema, hence the prompt version: every labeled row is stale.
    upgraded, v2 = run(1, incremental=True, relabel_stale=True)
    assert v2.version == v1.version and v2.prompt_version != v1.prompt_version
    # The undecodable file never reached the prompt; the same bytes fail the same way under any prompt.
    assert (upgraded.plan["stale"], upgraded.plan["unchanged"], upgraded.images_this_run) == (IMAGES, 1, IMAGES)
    rows = _live(dest)
    assert rows.pop("broken.jpg")["prompt_version"] is None
    assert {r["prompt_version"] for r in rows.values()} == {v2.prompt_version}
    assert all(len(r["persons"]) <= 1 for r in rows.values())
    again, _ = run(1, incremental=True, relabel_stale=True)
    assert (again.plan["stale"], again.plan["unchanged"], again.images_this_run) == (0, IMAGES + 1, 0)

    # The same through backfill (what `humantag backfill` runs): back to max_persons=2.
    backfill, v3 = run(2, backfill=True, relabel_stale=True)
    assert v3 == v1 and (backfill.plan["stale"], backfill.images_this_run) == (IMAGES, IMAGES)
    assert {r["prompt_version"] for n, r in _live(dest).items() if n != "broken.jpg"} == {v1.prompt_version}
    fresh_plan, _ = run(2, backfill=True, relabel_stale=True, run_id="backfill-again")
    assert (fresh_plan.plan["stale"], fresh_plan.plan["unchanged"], fresh_plan.images_this_run) == (0, IMAGES + 1, 0)


def test_dry_run_backfill_copies_no_weights_to_the_driver(s3_server, tiny_llava_dir: Path, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket("dryrun")
    _upload_photos(s3_server, bucket)
    client = s3_server.client()
    for path in tiny_llava_dir.iterdir():
        client.upload_file(str(path), bucket, f"models/tiny/{path.name}")
    node_cache = tmp_path / "node-cache"
    result = run_cli("backfill", f"s3://{bucket}/photos", "--out", f"s3://{bucket}/out", "--labeler", "humanvlm",
                     "--model", f"s3://{bucket}/models/tiny", "--dry-run", "--batch-size", "16",
                     env={**s3_server.env(), "HUMANTAG_MODEL_CACHE": str(node_cache), "COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "estimated GPU-hours" in result.stdout and "projection" in result.stdout, result.stdout
    assert f"{IMAGES + 1}" in result.stdout
    # The plan needed the model's identity (an S3 listing); no actor ran, so nothing was copied.
    assert not node_cache.exists() or not any(node_cache.iterdir()), list(node_cache.rglob("*"))
    assert not client.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents")  # dry run: DEST untouched
