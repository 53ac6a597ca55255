"""Every awkward file becomes a correct ok row or an error row with a specific kind."""

from pathlib import Path

import pytest

from tests.fixtures.bad_inputs import write_bad_corpus
from humantag.workers.loader import DecodeOptions, SourceObject, load_one
from humantag.workers.storage import StorageOptions

CORPUS_DIR: Path | None = None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_corpus(folder)


def _load(folder: Path, name: str, **decode):
    path = folder / name
    obj = SourceObject(uri=f"file://{path}", size_bytes=path.stat().st_size if path.exists() else None)
    return load_one(obj, DecodeOptions(**decode), StorageOptions())


def test_each_file_gets_its_expected_outcome(corpus):
    folder, expected = corpus
    for name, expect in expected.items():
        item = _load(folder, name)
        assert (item.error_kind is None) == (expect.status == "ok"), (name, item.error_kind, item.error_message)
        if expect.status == "error":
            assert item.error_kind == expect.error_kind, (name, item.error_message)
            assert item.error_message
            assert item.pixels is None
        else:
            assert item.pixels is not None and item.pixels.dtype.name == "uint8" and item.pixels.shape[2] == 3
            assert (item.width, item.height) == (expect.width, expect.height), name
            assert item.pixels.shape[:2] == (expect.height, expect.width), name
            if expect.mode:
                assert item.mode == expect.mode, name


def test_sixteen_bit_png_keeps_its_range(corpus):
    folder, _ = corpus
    item = _load(folder, "sixteen.png")
    assert item.pixels.max() > 200  # scaled from 16 bits, not clipped to white or black
    assert item.pixels.min() < 50


def test_alpha_is_composited_not_dropped(corpus):
    folder, _ = corpus
    item = _load(folder, "alpha.png")
    assert item.pixels.shape == (20, 30, 3)


def test_decompression_bomb_is_refused_before_decoding(corpus):
    import resource

    folder, _ = corpus
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    item = _load(folder, "bomb.png")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert item.error_kind == "decompression_bomb"
    assert "100000000 pixels" in item.error_message
    assert after - before < 100_000  # KiB: a decoded 10k x 10k image would need ~300 MB


def test_vanished_file_is_a_missing_row(tmp_path):
    obj = SourceObject(uri=f"file://{tmp_path}/gone.jpg", size_bytes=10)
    item = load_one(obj, DecodeOptions(), StorageOptions())
    assert item.error_kind == "missing"


def test_too_large_by_listing_size_is_not_read(tmp_path):
    obj = SourceObject(uri=f"file://{tmp_path}/huge.jpg", size_bytes=10**10)
    item = load_one(obj, DecodeOptions(max_bytes=10**6), StorageOptions())
    assert item.error_kind == "too_large"


def test_max_side_downscales_pixels_but_keeps_source_size(corpus):
    folder, _ = corpus
    item = _load(folder, "ok.jpg", max_side=16)
    assert (item.width, item.height) == (64, 48)
    assert max(item.pixels.shape[:2]) <= 16
    assert item.scale < 1
