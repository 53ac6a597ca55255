"""HumanVLM model sources: local dir, object storage via the node cache, hub id from the HF cache."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from humantag.workers.images import DecodedImage
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.labelers.humanvlm import loading


def _label_one(model: str, cache: Path) -> tuple[str, str | None]:
    lab = create_labeler("humanvlm", LabelerOptions(
        model=model, device="cpu", extra={"cache_dir": str(cache), "max_persons": 1, "caption": False}))
    lab.setup()
    image = DecodedImage(uri="mem://a.png", pixels=np.full((24, 40, 3), 128, dtype=np.uint8))
    out = lab.label([image])[0]
    return lab.version, out.error_kind


def test_parse_sources(tmp_path: Path) -> None:
    assert loading.ModelSource.parse(str(tmp_path)) == loading.ModelSource("local", str(tmp_path.resolve()))
    assert loading.ModelSource.parse("s3://bucket/models/hv/") == loading.ModelSource("remote", "s3://bucket/models/hv")
    assert loading.ModelSource.parse("OpenFace-CQUPT/Human_LLaVA@abc123") == loading.ModelSource(
        "hub", "OpenFace-CQUPT/Human_LLaVA", "abc123")
    missing = loading.ModelSource.parse(str(tmp_path / "missing"))
    assert missing.kind == "local"  # may exist only on the worker nodes
    with pytest.raises(FileNotFoundError, match="does not exist on this node"):
        loading.resolve(missing, tmp_path / "cache")


def test_local_dir_version_is_a_content_hash(tiny_llava_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_llava_dir, copy)
    cache = tmp_path / "cache"
    first = loading.local_dir_hash(copy, cache)
    assert loading.local_dir_hash(tiny_llava_dir, cache) == first  # same content, other place
    assert len(list((cache / "hashes").iterdir())) == 2  # memoized per directory
    (copy / "generation_config.json").write_text('{"do_sample": false}')
    assert loading.local_dir_hash(copy, cache) != first


def test_object_storage_copied_once_per_node(tiny_llava_dir: Path, s3_env, tmp_path: Path) -> None:
    bucket = s3_env.new_bucket("models")
    client = s3_env.client()
    for path in tiny_llava_dir.iterdir():
        client.upload_file(str(path), bucket, f"humanvlm/tiny/{path.name}")
    url = f"s3://{bucket}/humanvlm/tiny"
    cache = tmp_path / "node-cache"
    results: list[tuple[Path, str, bool]] = []
    # Two actors on one node starting at once: one copies, the other waits on the lock and reuses.
    threads = [threading.Thread(target=lambda: results.append(loading.fetch_to_node_cache(url, cache))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(copied for _, _, copied in results) == [False, True]
    assert results[0][0] == results[1][0]
    local = results[0][0]
    assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in tiny_llava_dir.iterdir())
    assert not list(cache.glob(".partial-*"))

    version, error = _label_one(url, cache)
    assert error is None
    assert version.startswith(f"{url}@sha256-")
    # Loading again reuses the cache; a changed object is a new version.
    assert loading.fetch_to_node_cache(url, cache)[2] is False
    client.put_object(Bucket=bucket, Key="humanvlm/tiny/generation_config.json", Body=b'{"do_sample": false}')
    path2, _, copied2 = loading.fetch_to_node_cache(url, cache)
    assert copied2 and path2 != local


def test_hub_id_loads_offline_from_the_hf_cache(tiny_llava_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_cache = tmp_path / "hf"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = hub_cache / "models--OpenFace-CQUPT--Human_LLaVA"
    shutil.copytree(tiny_llava_dir, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    version, error = _label_one("OpenFace-CQUPT/Human_LLaVA", tmp_path / "cache")
    assert error is None
    assert version == f"OpenFace-CQUPT/Human_LLaVA@{commit}"
