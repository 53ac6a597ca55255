"""Labeler identity from the options alone, the derived schema version, retries and estimates."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal, Optional

import fsspec
import pytest
from pydantic import create_model

from humantag.flows.estimates import estimate, estimate_row
from humantag.flows.incremental import CurrentVersions, build_incremental_plan
from humantag.flows.listing import SourceSpec
from humantag.indexers.layout import OutputLayout
from humantag.workers.labelers import LabelerOptions, create_labeler
from humantag.workers.labelers.base import Labeler, LabelerIdentity
from humantag.workers.labelers.humanvlm import loading
from humantag.workers.loader import SourceObject
from humantag.workers.records import SCHEMA_VERSION, LabeledImage, records_to_table, schema_fingerprint, utcnow

PLUG_INS = ["tests.fixtures.versioned_labeler:VersionedLabeler", "tests.fixtures.crashing_labeler:CrashOnceLabeler"]


def test_schema_version_is_derived_from_the_schema() -> None:
    assert SCHEMA_VERSION == schema_fingerprint(LabeledImage) == LabeledImage.model_fields["schema_version"].get_default(
        call_default_factory=True)

    class Reworded(LabeledImage):
        """Same fields, other words: not a schema change."""

    assert schema_fingerprint(Reworded) == SCHEMA_VERSION
    one_more = create_model("OneMore", __base__=LabeledImage, mood=(Optional[str], None))
    assert schema_fingerprint(one_more) != SCHEMA_VERSION
    retyped = create_model("Retyped", __base__=LabeledImage, width=(Optional[float], None))
    assert schema_fingerprint(retyped) != SCHEMA_VERSION
    # An enumerated value added is a schema change, though Arrow stores both as strings.
    more_status = create_model("MoreStatus", __base__=LabeledImage, status=(Literal["ok", "error", "skipped"], ...))
    assert schema_fingerprint(more_status) != SCHEMA_VERSION


def test_identity_is_a_declared_part_of_the_interface(tiny_llava_dir: Path, tmp_path: Path) -> None:
    class NoIdentity(Labeler):
        name = "no-identity"

        def label(self, images):
            return []

    with pytest.raises(TypeError, match="identity"):
        NoIdentity()  # type: ignore[abstract]
    humanvlm = LabelerOptions(model=str(tiny_llava_dir), extra={"cache_dir": str(tmp_path / "cache")})
    for name, options in [("image-facts", None), ("cpu", None), ("humanvlm", humanvlm),
                          ("gate", humanvlm), *((p, None) for p in PLUG_INS)]:
        labeler = create_labeler(name, options)
        identity = labeler.identity()
        assert isinstance(identity, LabelerIdentity) and identity.version == labeler.version
        assert identity.schema_version == SCHEMA_VERSION
        assert identity in labeler.current_identities()
    gate = create_labeler("gate", humanvlm)
    assert {i.version for i in gate.current_identities()} == {gate.version, gate.gated_version, gate.inner.version}


def _humanvlm(model: str, cache: Path, **extra) -> Labeler:
    return create_labeler("humanvlm", LabelerOptions(
        model=model, device="cpu", extra={"cache_dir": str(cache), "max_persons": 2, "caption_max_new_tokens": 8, **extra}))


def test_humanvlm_identity_without_loading_matches_the_loaded_one(tiny_llava_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    driver = _humanvlm(str(tiny_llava_dir), cache)
    identity = driver.identity()
    assert driver._loaded is None and driver._resolved is None  # nothing loaded to know it
    assert identity.version.startswith("model@sha256-") and identity.prompt_version.startswith("v2-")
    actor = _humanvlm(str(tiny_llava_dir), cache)
    actor.setup()
    assert actor.identity() == identity and actor._prompts.version == identity.prompt_version
    # What shapes the output changes the prompt version; the same options give the same one.
    assert _humanvlm(str(tiny_llava_dir), cache).identity() == identity
    others = [_humanvlm(str(tiny_llava_dir), cache, max_persons=1), _humanvlm(str(tiny_llava_dir), cache, caption=False),
              _humanvlm(str(tiny_llava_dir), cache, caption_max_new_tokens=9),
              create_labeler("humanvlm", LabelerOptions(model=str(tiny_llava_dir), sensitive_attributes=True,
                                                        extra={"cache_dir": str(cache), "max_persons": 2,
                                                               "caption_max_new_tokens": 8}))]
    versions = {o.identity().prompt_version for o in others}
    assert len(versions) == len(others) and identity.prompt_version not in versions
    assert all(o.identity().version == identity.version for o in others)


def test_unknown_identity_is_a_user_error(tmp_path: Path) -> None:
    from humantag.flows.errors import UserError
    from humantag.flows.label_archive import current_versions

    missing = create_labeler("humanvlm", LabelerOptions(model=str(tmp_path / "no-such-model")))
    with pytest.raises(UserError, match="does not exist on this node"):
        current_versions(missing)


def test_hub_identity_from_the_revision_or_the_cache_never_a_download(
    tiny_llava_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub_constants

    hub_cache = tmp_path / "hf"
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo_dir = hub_cache / "models--OpenFace-CQUPT--Human_LLaVA"
    shutil.copytree(tiny_llava_dir, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    parse = loading.ModelSource.parse
    assert loading.identify(parse("OpenFace-CQUPT/Human_LLaVA"), tmp_path) == f"OpenFace-CQUPT/Human_LLaVA@{commit}"
    pinned = "0" * 40
    assert loading.identify(parse(f"someone/else@{pinned}"), tmp_path) == f"someone/else@{pinned}"
    with pytest.raises(FileNotFoundError, match="pin the commit"):
        loading.identify(parse("someone/else@main"), tmp_path)


@pytest.mark.slow
def test_object_storage_identity_is_the_listing_without_copying(tiny_llava_dir: Path, s3_env, tmp_path: Path) -> None:
    bucket = s3_env.new_bucket("ident")
    client = s3_env.client()
    for path in tiny_llava_dir.iterdir():
        client.upload_file(str(path), bucket, f"hv/{path.name}")
    url, cache = f"s3://{bucket}/hv", tmp_path / "node-cache"
    version = _humanvlm(url, cache).identity().version
    assert version.startswith(f"{url}@sha256-") and not cache.exists()  # listed, not copied
    assert loading.resolve(loading.ModelSource.parse(url), cache).version == version  # what the actor stamps
    client.put_object(Bucket=bucket, Key="hv/generation_config.json", Body=b'{"do_sample": false}')
    assert _humanvlm(url, cache).identity().version != version


def _row(uri: str, kind: Optional[str], identity: LabelerIdentity) -> LabeledImage:
    return LabeledImage(uri=uri, size_bytes=10, status="error" if kind else "ok", error_kind=kind, labeler="humanvlm",
                        labeler_version=identity.version, prompt_version=identity.prompt_version if kind != "truncated" else None,
                        run_id="r1", shard_id="s1", labeled_at=utcnow())


def test_generation_errors_are_retried_and_stale_rows_found_per_identity(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    layout = OutputLayout(str(tmp_path / "out"))
    current = LabelerIdentity("m@1", "v2-a")
    rows = [_row("file:///a.jpg", "generation_error", current), _row("file:///b.jpg", "invalid_output", current),
            _row("file:///c.jpg", None, current), _row("file:///d.jpg", None, LabelerIdentity("m@1", "v2-old")),
            _row("file:///e.jpg", "truncated", current)]  # never reached the prompt: no prompt version
    fs.makedirs(layout.labels_dir, exist_ok=True)
    with fs.open(layout.labels_file("s1"), "wb") as fh:
        import pyarrow.parquet as pq

        pq.write_table(records_to_table(rows), fh)
    listing = [SourceObject(uri=r.uri, size_bytes=10) for r in rows]

    def plan(run_id: str, relabel_stale: bool):
        return build_incremental_plan(listing, SourceSpec(url="file:///"), fs, layout, run_id, 10,
                                      CurrentVersions((current,)), relabel_stale=relabel_stale, track_deletions=False)

    counts = plan("p1", relabel_stale=True).counts
    assert (counts.retry, counts.stale, counts.unchanged) == (1, 1, 3)  # a, d; b, c, e
    assert plan("p2", relabel_stale=False).counts.retry == 1


def test_dry_run_estimate_comes_from_the_labeler(tiny_llava_dir: Path, tmp_path: Path) -> None:
    options = LabelerOptions(model=str(tiny_llava_dir), batch_size=16, extra={"cache_dir": str(tmp_path)})
    humanvlm = create_labeler("humanvlm", options)
    rate = humanvlm.throughput()
    assert rate.accelerator == "GPU" and "projection" in rate.source and 0.5 < rate.images_per_second < 74
    found = estimate(humanvlm, 36_000)
    assert found.hours == pytest.approx(36_000 / rate.images_per_second / 3600)
    # Behind the gate only the share that passes reaches HumanVLM (the detector cores bound it too).
    gate = create_labeler("gate", options.model_copy(update={"extra": {**options.extra, "gate_pass_rate": 0.25,
                                                                         "gate_workers": 32}}))
    assert gate.throughput().images_per_second == pytest.approx(rate.images_per_second / 0.25)
    assert "pass rate 25%" in estimate_row(gate, 1000)[1]
    assert estimate(humanvlm, 3600, override_rate=2.0).hours == pytest.approx(0.5)
    assert "--gpu-rate" in estimate_row(humanvlm, 3600, 2.0)[1]
    cpu_labeler = create_labeler("cpu")
    cpu = estimate(cpu_labeler, 3600 * 1000)
    assert cpu.rate.accelerator == "CPU core" and "bench/cpu_labeler.py" in cpu.rate.source
    assert cpu.hours == pytest.approx(1000 / cpu_labeler.throughput().images_per_second)
