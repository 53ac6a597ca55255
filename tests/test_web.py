"""`humantag serve`: the HTTP API over the real backends, thumbnails of real images, the page in Chromium.

A small labeled DEST is built from image files written here (JPEG, PNG, one
with an EXIF rotation), plus a row whose source file was deleted and an error
row whose file is not an image. The API is exercised with the DuckDB backend
over the Parquet files and with OpenSearch (after `sync_index`); the page is
driven in headless Chromium against `humantag serve` running as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from humantag.indexers.documents import document_id
from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.settings import OpenSearchSettings
from humantag.indexers.opensearch.sync import sync_index
from humantag.indexers.parquet_sink import write_shard
from humantag.indexers.search.backends import open_backend
from humantag.indexers.web import create_app
from humantag.indexers.web.thumbnails import SourceMissing, SourceUnreadable, ThumbnailMaker
from tests.fixtures.cli import popen_cli, run_cli
from humantag.workers.attributes import Box, Person, Scene
from humantag.workers.records import LabeledImage, utcnow
from humantag.workers.storage import StorageOptions, filesystem

THUMB = 128
RUN_ID = "web-test"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


# ---- a labeled DEST over real image files ------------------------------------------------


@dataclass
class Photo:
    name: str
    size: tuple[int, int]  # as stored (before EXIF rotation)
    color: tuple[int, int, int]
    caption: str | None
    setting: str | None
    environment: str | None
    persons: list[Person]
    orientation: int = 1
    fmt: str = "JPEG"
    write: str = "image"  # image | missing | garbage
    status: str = "ok"
    error_kind: str | None = None

    @property
    def shown_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)

    @property
    def thumb_size(self) -> tuple[int, int]:
        w, h = self.shown_size
        scale = THUMB / max(w, h)
        return round(w * scale), round(h * scale)


def _person(**attrs: Any) -> Person:
    return Person(face_visible=True, face_box=Box(x=10, y=12, w=40, h=48, score=0.93),
                  confidence={"eyewear": 0.9} if "eyewear" in attrs else None, **attrs)


PHOTOS = [
    Photo("beach-1.jpg", (640, 480), (230, 190, 120), "a woman in sunglasses smiling on the beach", "beach", "outdoor",
          [_person(age_group="adult", expression="smiling", eyewear="sunglasses", upper_clothing="t-shirt",
                   upper_clothing_color="red")]),
    Photo("beach-2.jpg", (480, 640), (90, 160, 220), "two friends laughing on the beach at sunset", "beach", "outdoor",
          [_person(age_group="adult", expression="smiling", eyewear="sunglasses", upper_clothing_color="blue"),
           _person(age_group="adult", expression="laughing", eyewear="none", upper_clothing_color="yellow")]),
    Photo("street.jpg", (800, 600), (120, 120, 130), "a man in glasses and a red jacket on a busy street", "street",
          "outdoor", [_person(age_group="adult", expression="serious", eyewear="glasses", upper_clothing="jacket",
                              upper_clothing_color="red")]),
    Photo("office.png", (500, 500), (200, 210, 200), "three colleagues in an office meeting", "office", "indoor",
          [_person(age_group="adult", expression="neutral", eyewear="none", upper_clothing="shirt",
                   upper_clothing_color=c) for c in ("white", "blue", "black")], fmt="PNG"),
    # Stored 400x200 landscape, EXIF says rotate 90°: shown (and thumbnailed) as 200x400 portrait.
    Photo("rotated.jpg", (400, 200), (240, 140, 160), "a child in a hat playing on the beach", "beach", "outdoor",
          [_person(age_group="child", expression="smiling", eyewear="none", headwear="hat")], orientation=6),
    Photo("missing.jpg", (640, 480), (0, 0, 0), "a crowd at a concert", "event", "indoor",
          [Person(age_group="adult"), Person(age_group="teen")], write="missing"),
    Photo("corrupt.jpg", (0, 0), (0, 0, 0), None, None, None, [], write="garbage", status="error",
          error_kind="not_an_image"),
]
BY_NAME = {p.name: p for p in PHOTOS}


def _draw(photo: Photo) -> Image.Image:
    image = Image.new("RGB", photo.size, photo.color)
    draw = ImageDraw.Draw(image)
    w, h = photo.size
    draw.rectangle([0, int(h * 0.65), w, h], fill=tuple(max(0, c - 60) for c in photo.color))
    draw.ellipse([int(w * 0.35), int(h * 0.2), int(w * 0.55), int(h * 0.5)], fill=(250, 220, 190))
    draw.rectangle([int(w * 0.33), int(h * 0.5), int(w * 0.57), int(h * 0.9)], fill=(40, 60, 140))
    return image


@dataclass
class Dest:
    root: Path
    photos: Path
    uris: dict[str, str]  # photo name -> uri in the index

    def id(self, name: str) -> str:
        return document_id(self.uris[name])


def build_dest(base: Path) -> Dest:
    photos, root = base / "photos", base / "dest"
    photos.mkdir(parents=True)
    uris, rows = {}, []
    for i, photo in enumerate(PHOTOS):
        path = photos / photo.name
        uri = path.as_uri()
        uris[photo.name] = uri
        if photo.write == "image":
            image = _draw(photo)
            if photo.orientation != 1:
                exif = Image.Exif()
                exif[0x0112] = photo.orientation
                image.save(path, photo.fmt, exif=exif)
            else:
                image.save(path, photo.fmt)
        elif photo.write == "garbage":
            path.write_bytes(b"this is not an image, just text under a .jpg name\n" * 20)
        w, h = photo.shown_size
        rows.append(LabeledImage(
            uri=uri, size_bytes=path.stat().st_size if path.exists() else 1234,
            width=w or None, height=h or None, format=photo.fmt if photo.status == "ok" else None,
            status=photo.status, error_kind=photo.error_kind,
            error_message="not a recognised image format (first bytes b'this is '" if photo.error_kind else None,
            labeler="cpu", labeler_version="cpu-1", run_id=RUN_ID, shard_id=f"shard-{i // 4:03d}",
            labeled_at=utcnow(), caption=photo.caption,
            people_count=len(photo.persons) if photo.status == "ok" else None,
            persons=photo.persons or None,
            scene=Scene(environment=photo.environment, setting=photo.setting) if photo.setting else None,
        ))
    fs, root_path = filesystem(str(root))
    layout = OutputLayout(root_path)
    for shard_id in sorted({r.shard_id for r in rows}):
        write_shard(fs, layout.labels_file(shard_id), [r for r in rows if r.shard_id == shard_id])
    return Dest(root=root, photos=photos, uris=uris)


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Dest:
    return build_dest(tmp_path_factory.mktemp("web"))


@pytest.fixture(params=["parquet", "opensearch"])
def client(request: pytest.FixtureRequest, dest: Dest) -> Iterator[TestClient]:
    """A TestClient over the real backend: DuckDB over DEST/labels, or OpenSearch filled by sync_index."""
    storage = StorageOptions()
    if request.param == "parquet":
        backend = open_backend(str(dest.root), None, storage)
    else:
        search_index = request.getfixturevalue("search_index")
        fs, root = filesystem(str(dest.root))
        report = sync_index(search_index.settings, fs, OutputLayout(root), RUN_ID)
        assert report.ok and report.documents_indexed == len(PHOTOS), report
        backend = open_backend(None, search_index.settings, storage)
    try:
        with TestClient(create_app(backend, storage, thumbnail_px=THUMB), raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        backend.close()


def _ids(response: httpx.Response) -> set[str]:
    return {hit["id"] for hit in response.json()["hits"]}


def _facet(body: dict[str, Any], field: str) -> dict[Any, int]:
    return {bucket["value"]: bucket["count"] for bucket in body["facets"][field]}


# ---- the API over both backends -------------------------------------------------------------


def test_search_filters_text_and_facets(client: TestClient, dest: Dest) -> None:
    everything = client.get("/api/search", params={"size": 50})
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert body["total"] == len(PHOTOS)
    assert _ids(everything) == {dest.id(p.name) for p in PHOTOS}
    for hit in body["hits"]:
        assert hit["id"] == document_id(hit["uri"]) and hit["document"]["uri"] == hit["uri"]
    assert _facet(body, "scene.setting") == {"beach": 3, "street": 1, "office": 1, "event": 1}
    assert _facet(body, "status") == {"ok": 6, "error": 1}
    # Person facets count images, not people: office has three people without eyewear.
    assert _facet(body, "person.eyewear") == {"none": 3, "sunglasses": 2, "glasses": 1}

    beach = client.get("/api/search", params={"text": "beach"})
    assert _ids(beach) == {dest.id(n) for n in ("beach-1.jpg", "beach-2.jpg", "rotated.jpg")}
    narrowed = client.get("/api/search", params={"text": "beach", "where": "person.eyewear=sunglasses"})
    assert _ids(narrowed) == {dest.id("beach-1.jpg"), dest.id("beach-2.jpg")}
    assert _facet(narrowed.json(), "person.expression") == {"smiling": 2, "laughing": 1}
    either = client.get("/api/search", params={"where": ["person.eyewear=sunglasses,glasses", "scene.environment=outdoor"]})
    assert either.json()["total"] == 3
    errors = client.get("/api/search", params={"where": "status=error"})
    (hit,) = errors.json()["hits"]
    assert hit["id"] == dest.id("corrupt.jpg") and hit["document"]["error_kind"] == "not_an_image"
    # Only the facets asked for; an empty facet parameter asks for none.
    assert set(client.get("/api/search", params={"facet": ["status", "person.headwear"]}).json()["facets"]) == {"status", "person.headwear"}
    assert client.get("/api/search", params={"facet": "", "size": 0}).json()["facets"] == {}


def test_pages_follow_next_cursor(client: TestClient, dest: Dest) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"size": 3, "facet": ""}
    for _ in range(5):
        page = client.get("/api/search", params=params).json()
        assert page["total"] == len(PHOTOS)
        seen += [hit["id"] for hit in page["hits"]]
        if not page["next_cursor"]:
            break
        params["after"] = page["next_cursor"]
    assert len(seen) == len(set(seen)) == len(PHOTOS)


@pytest.mark.parametrize("params, fragment", [
    ({"where": "colour=red"}, "unknown field"),
    ({"where": "person.eyewear=purple"}, "person.eyewear is one of"),
    ({"where": "people_count>=many"}, "whole number"),
    ({"where": "just words"}, "cannot read"),
    ({"facet": "caption"}, "cannot be a facet"),
    ({"size": 100000}, "size"),
    ({"size": "ten"}, "size"),
    ({"after": "not-a-cursor"}, "cursor"),
    ({"text": "x" * 600}, "text"),
])
def test_bad_queries_are_400_with_one_line(client: TestClient, params: dict[str, Any], fragment: str) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert list(body) == ["error"] and fragment in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"] and len(body["error"]) <= 300


def test_fields_and_documents(client: TestClient, dest: Dest) -> None:
    info = client.get("/api/fields").json()
    fields = {f["name"]: f for f in info["fields"]}
    assert fields["person.eyewear"]["kind"] == "keyword" and fields["person.eyewear"]["facetable"]
    assert "sunglasses" in fields["person.eyewear"]["values"] and fields["person.eyewear"]["person"]
    assert fields["caption"]["kind"] == "text" and not fields["caption"]["facetable"]
    assert set(info["default_facets"]) <= {name for name, f in fields.items() if f["facetable"]}
    assert info["backend"]

    doc = client.get(f"/api/documents/{dest.id('beach-2.jpg')}")
    assert doc.status_code == 200
    assert doc.json()["caption"] == BY_NAME["beach-2.jpg"].caption
    assert [p["eyewear"] for p in doc.json()["persons"]] == ["sunglasses", "none"]
    assert client.get(f"/api/documents/{'0' * 32}").status_code == 404
    assert client.get("/api/documents/not-an-id").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}


def test_thumbnails_are_jpegs_of_the_indexed_images(client: TestClient, dest: Dest) -> None:
    for photo in PHOTOS:
        if photo.write != "image":
            continue
        response = client.get(f"/api/thumbnails/{dest.id(photo.name)}.jpg")
        assert response.status_code == 200, (photo.name, response.text)
        assert response.headers["content-type"] == "image/jpeg"
        assert "max-age" in response.headers["cache-control"]
        thumb = Image.open(io.BytesIO(response.content))
        assert thumb.format == "JPEG" and thumb.mode == "RGB"
        assert thumb.size == photo.thumb_size, photo.name  # rotated.jpg comes out portrait: EXIF applied
        # Top-right shows the photo's background; for rotated.jpg only if turned the right way
        # (its ground band, at the bottom as stored, ends up on the left).
        assert all(abs(a - b) < 24 for a, b in zip(thumb.getpixel((thumb.width - 3, 2)), photo.color)), photo.name
        again = client.get(f"/api/thumbnails/{dest.id(photo.name)}.jpg",
                           headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content

    missing = client.get(f"/api/thumbnails/{dest.id('missing.jpg')}.jpg")
    assert missing.status_code == 404 and missing.json()["kind"] == "missing"
    corrupt = client.get(f"/api/thumbnails/{dest.id('corrupt.jpg')}.jpg")
    assert corrupt.status_code == 422 and corrupt.json()["kind"] == "not_an_image"
    assert client.get(f"/api/thumbnails/{'f' * 32}.jpg").status_code == 404


def test_thumbnails_never_read_a_path_from_the_client(client: TestClient, dest: Dest) -> None:
    # A real image on disk, but not in the index: its well-formed id does not make it readable.
    stranger = dest.photos.parent / "not-indexed.jpg"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(stranger)
    assert client.get(f"/api/thumbnails/{document_id(stranger.as_uri())}.jpg").status_code == 404
    assert client.get(f"/api/thumbnails/{document_id(str(stranger))}.jpg").status_code == 404
    for attempt in ("/api/thumbnails/..%2F..%2Fetc%2Fpasswd.jpg", "/api/thumbnails/%2Fetc%2Fpasswd.jpg",
                    f"/api/thumbnails?uri={stranger.as_uri()}", f"/api/thumbnails/{stranger}.jpg",
                    f"/api/documents/..%2F{dest.id('beach-1.jpg')}"):
        response = client.get(attempt)
        assert response.status_code in (404, 405), attempt
        assert response.headers["content-type"].startswith("application/json"), attempt
    # A uri parameter is ignored: the indexed image is what comes back.
    plain = client.get(f"/api/thumbnails/{dest.id('beach-1.jpg')}.jpg")
    with_uri = client.get(f"/api/thumbnails/{dest.id('beach-1.jpg')}.jpg", params={"uri": stranger.as_uri()})
    assert with_uri.status_code == 200 and with_uri.content == plain.content


def test_unreachable_opensearch_is_503_with_one_line(dest: Dest) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = OpenSearchSettings(urls=f"http://127.0.0.1:{port}", index="humantag-nowhere", timeout_s=5)
    backend = open_backend(None, settings, StorageOptions())
    try:
        with TestClient(create_app(backend, StorageOptions(), thumbnail_px=THUMB), raise_server_exceptions=False) as client:
            for path in ("/api/search", f"/api/documents/{dest.id('beach-1.jpg')}", f"/api/thumbnails/{dest.id('beach-1.jpg')}.jpg"):
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
            assert client.get("/healthz").status_code == 200
    finally:
        backend.close()


def test_plain_words_originals_and_honest_empty_results(client: TestClient, dest: Dest) -> None:
    meaning = client.get("/api/interpret", params={"q": "someone in shades on the beach"})
    assert meaning.status_code == 200 and meaning.json()["where"] == ["person.eyewear=sunglasses", "scene.setting=beach"]
    assert client.get("/api/interpret", params={"q": " "}).status_code == 400
    found = client.get("/api/search", params={"q": "someone in shades on the beach"}).json()
    assert found["interpreted"] == meaning.json()["where"] and found["not_produced"] == []
    assert _ids_of(found) == {dest.id("beach-1.jpg"), dest.id("beach-2.jpg")}

    # Nothing matches because no row has the field: say which labeler made the rows, and where its doc is.
    empty = client.get("/api/search", params={"where": "person.gender_presentation=feminine"}).json()
    assert empty["total"] == 0
    (note,) = empty["not_produced"]
    assert note["field"] == "person.gender_presentation" and note["labelers"] == ["cpu"]
    assert "docs/cpu-labeler.md" in note["message"]

    # The original, proxied by the server with the thumbnails' guards.
    original = client.get(f"/api/originals/{dest.id('office.png')}")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == (dest.photos / "office.png").read_bytes()
    assert "sandbox" in original.headers["content-security-policy"]
    assert client.get(f"/api/originals/{dest.id('missing.jpg')}").json()["kind"] == "missing"
    corrupt = client.get(f"/api/originals/{dest.id('corrupt.jpg')}")
    assert corrupt.status_code == 422 and corrupt.json()["kind"] == "not_an_image"
    stranger = dest.photos.parent / "not-indexed-original.jpg"
    Image.new("RGB", (8, 8)).save(stranger)
    assert client.get(f"/api/originals/{document_id(stranger.as_uri())}").status_code == 404
    assert client.get("/api/originals/..%2F..%2Fetc%2Fpasswd").status_code == 404


def _ids_of(body: dict[str, Any]) -> set[str]:
    return {hit["id"] for hit in body["hits"]}


# ---- thumbnail guards, on the maker itself (no backend involved) -----------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a decompression bomb in 60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_thumbnail_maker_guards_and_cache(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30_000, 30_000))
    big = tmp_path / "big.jpg"
    Image.effect_noise((1200, 1200), 80).convert("RGB").save(big, quality=95)
    maker = ThumbnailMaker(StorageOptions(), size_px=64, max_source_bytes=big.stat().st_size - 1,
                           cache_bytes=3_000)
    with pytest.raises(SourceUnreadable) as bomb_error:
        maker.get("a" * 32, bomb.as_uri(), "v1")
    assert bomb_error.value.kind == "decompression_bomb" and bomb_error.value.status == 422
    with pytest.raises(SourceUnreadable) as big_error:
        maker.get("b" * 32, big.as_uri(), "v1")
    assert big_error.value.kind == "too_large"
    with pytest.raises(SourceMissing):
        maker.get("c" * 32, (tmp_path / "gone.jpg").as_uri(), "v1")

    # The LRU keeps recent thumbnails within its byte budget, keyed by id + source version.
    for i in range(6):
        path = tmp_path / f"p{i}.jpg"
        Image.effect_noise((200, 150), 40 + i).convert("RGB").save(path)
        thumb = maker.get(f"{i:032x}", path.as_uri(), "v1")
        assert (thumb.width, thumb.height) == (64, 48)
        assert maker.cache.size_bytes <= 3_000
        path.unlink()  # served from the cache from now on
        assert maker.get(f"{i:032x}", path.as_uri(), "v1") is thumb
    assert 0 < len(maker.cache) < 6


# ---- the command ------------------------------------------------------------------------------


def test_serve_bad_arguments_are_one_line(dest: Dest) -> None:
    no_source = run_cli("serve", env={"OPENSEARCH_URL": "", "HUMANTAG_OUT": ""}, timeout=120)
    assert no_source.returncode == 2, no_source.stderr
    assert no_source.stderr.strip().count("\n") == 0 and "give DEST" in no_source.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = run_cli("serve", str(dest.root), "--port", str(port), env={"OPENSEARCH_URL": ""}, timeout=120)
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in busy.stderr, busy.stderr
    assert busy.stderr.strip().count("\n") == 0

    nowhere = run_cli("serve", str(dest.root / "nowhere"), "--port", "0", env={"OPENSEARCH_URL": ""}, timeout=120)
    assert nowhere.returncode == 2 and nowhere.stderr.strip().count("\n") == 0, nowhere.stderr
    assert nowhere.stderr.startswith("humantag: error: ") and "nowhere" in nowhere.stderr


# ---- the page in a browser -----------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen


@pytest.fixture
def served(dest: Dest) -> Iterator[Server]:
    """`humantag serve DEST --port 0` as a user runs it; the URL is read from what it prints."""
    process = popen_cli("serve", str(dest.root), "--port", "0", "--thumbnail-size", str(THUMB),
                        env={"OPENSEARCH_URL": ""})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.decode()) for line in process.stdout], daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert process.poll() is None, f"serve exited: {process.stderr.read().decode()}"
                continue
            if " on http://" in line:
                url = line.split(" on ", 1)[1].split()[0]
        assert url and url.startswith("http://127.0.0.1:"), "serve did not print its URL"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("serve never answered /healthz")
        yield Server(url=url, process=process)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: a clean stop
        assert process.wait(timeout=15) == 0, process.stderr.read().decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"headless Chromium is needed for the web page test ({CHROMIUM}, {CHROMEDRIVER}): "
                    "run `make system-deps` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="humantag-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_page_search_facets_details(served: Server, browser: Any, dest: Dest, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    # The grid is re-rendered by every search: an element found a moment ago may be gone.
    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))

    def tiles() -> list[Any]:
        return browser.find_elements(By.CSS_SELECTOR, "#grid .tile")

    def shown() -> set[str]:
        """The ids in the grid, read in one step (no element can go stale half-way)."""
        return set(browser.execute_script("return [...document.querySelectorAll('#grid .tile')].map(t => t.dataset.id);"))

    def wait_for_tiles(*names: str) -> list[Any]:
        """Until the grid shows exactly these photos (and the total says so)."""
        expected = {dest.id(n) for n in names}
        wait.until(lambda d: shown() == expected
                   and d.find_element(By.ID, "summary").get_attribute("data-total") == str(len(expected)))
        return tiles()

    def loaded(tile: Any) -> bool:
        return browser.execute_script(
            "const i = arguments[0].querySelector('img'); return i.complete && i.naturalWidth > 0;", tile)

    browser.get(served.url)
    wait_for_tiles(*BY_NAME)
    assert "7 images" in browser.find_element(By.ID, "summary").text

    # The server holds DEST's search database (one writer process): a search from here meanwhile
    # scans the Parquet files instead, with the same answers.
    from humantag.indexers.search.model import SearchRequest
    from humantag.indexers.search.parquet_backend import ParquetSearchBackend

    other = open_backend(str(dest.root), None, StorageOptions())
    try:
        assert isinstance(other, ParquetSearchBackend) and other.search(SearchRequest(size=0)).total == len(PHOTOS)
    finally:
        other.close()

    def chips() -> list[str]:
        return browser.execute_script("return [...document.querySelectorAll('#chips .chip')].map(c => c.dataset.where);")

    # Plain words, submitted with the button: their filters show as chips.
    box = browser.find_element(By.CSS_SELECTOR, "input#q")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=q]").text == "Describe the photos"
    box.send_keys("beach")
    browser.find_element(By.ID, "search-button").click()
    found = wait_for_tiles("beach-1.jpg", "beach-2.jpg", "rotated.jpg")
    assert chips() == ["scene.setting=beach"]
    wait.until(lambda d: all(loaded(t) for t in tiles()))
    assert all(t.find_element(By.TAG_NAME, "img").get_attribute("loading") == "lazy" for t in found)
    assert "q=beach" in browser.current_url and "where=scene.setting%3Dbeach" in browser.current_url

    # Tick a facet value: the results narrow, and the field's other values stay available (OR).
    sunglasses = 'input[type=checkbox][data-field="person.eyewear"][data-value="sunglasses"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, sunglasses))
    browser.find_element(By.CSS_SELECTOR, sunglasses).click()
    narrowed = wait_for_tiles("beach-1.jpg", "beach-2.jpg")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[data-field="person.eyewear"][data-value="none"]'))
    assert browser.find_element(By.CSS_SELECTOR, sunglasses).is_selected()
    assert "f=person.eyewear%3Dsunglasses" in browser.current_url

    # Details of one image: caption and the people's attributes.
    narrowed[0].click()
    wait.until(lambda d: d.find_element(By.ID, "details").is_displayed())
    caption = browser.find_element(By.ID, "details-caption").text
    assert caption in {BY_NAME["beach-1.jpg"].caption, BY_NAME["beach-2.jpg"].caption}
    details = browser.find_element(By.ID, "details-body").text
    assert "sunglasses" in details and "beach" in details and "file://" in details and "Person 1" in details
    assert "null" not in details and "undefined" not in details and "[object" not in details
    wait.until(lambda d: d.execute_script("const i = document.querySelector('.details-image'); return i.complete && i.naturalWidth > 0;"))
    shot = tmp_path / "web-page.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    # The URL is the search: reloading it restores text, ticked facet, results and the open panel.
    browser.refresh()
    wait_for_tiles("beach-1.jpg", "beach-2.jpg")
    assert browser.find_element(By.ID, "q").get_attribute("value") == "beach" and chips() == ["scene.setting=beach"]
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, sunglasses).is_selected())
    wait.until(lambda d: d.find_element(By.ID, "details-caption").text == caption)
    browser.find_element(By.ID, "details-close").click()
    wait.until(lambda d: not d.find_element(By.ID, "details").is_displayed())

    # Expert filters; error rows show their kind; a row whose file is gone shows a placeholder.
    browser.find_element(By.ID, "clear-button").click()
    wait_for_tiles(*BY_NAME)
    where = browser.find_element(By.ID, "where")
    where.send_keys("status=error", Keys.ENTER)
    (error_tile,) = wait_for_tiles("corrupt.jpg")
    assert "error: not_an_image" in error_tile.text
    wait.until(lambda d: "broken" in error_tile.get_attribute("class"))
    browser.find_element(By.CSS_SELECTOR, '#chips .chip[data-where="status=error"] button').click()  # remove the chip
    wait_for_tiles(*BY_NAME)
    where.send_keys("scene.setting=event")
    browser.find_element(By.ID, "search-button").click()
    (missing_tile,) = wait_for_tiles("missing.jpg")
    wait.until(lambda d: "broken" in missing_tile.get_attribute("class"))
    assert "no preview" in missing_tile.text

    # Pages: "Load more" follows next_cursor until every hit is shown.
    browser.get(served.url + "?size=3")
    wait.until(lambda d: len(tiles()) == 3)
    assert "7 images · showing 3" in browser.find_element(By.ID, "summary").text
    for count in (6, 7):
        browser.find_element(By.ID, "load-more").click()
        wait.until(lambda d: len(tiles()) == count)
    assert shown() == {dest.id(n) for n in BY_NAME}
    assert not browser.find_element(By.ID, "load-more").is_displayed()

    # A bad filter is shown as one line, not a broken page.
    where = browser.find_element(By.ID, "where")
    where.send_keys("person.eyewear=purple")
    browser.find_element(By.ID, "search-button").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "person.eyewear is one of" in browser.find_element(By.ID, "error").text

    # A plain-language query from the box: chips and results; removing a chip widens the search.
    browser.get(served.url)
    wait_for_tiles(*BY_NAME)
    box = browser.find_element(By.ID, "q")
    box.send_keys("someone in shades on the beach", Keys.ENTER)
    wait_for_tiles("beach-1.jpg", "beach-2.jpg")
    assert chips() == ["person.eyewear=sunglasses", "scene.setting=beach"]
    browser.find_element(By.CSS_SELECTOR, '#chips .chip[data-where="person.eyewear=sunglasses"] button').click()
    wait_for_tiles("beach-1.jpg", "beach-2.jpg", "rotated.jpg")
    assert chips() == ["scene.setting=beach"]

    # Underscores are visible in the filter box and the chips: "_" must draw pixels where a space draws none.
    def pixels_differ(selector: str, prop: str) -> bool:
        import io as _io

        from PIL import ImageChops

        shots = []
        for text in ("__________", "          "):
            browser.execute_script(f"document.querySelector(arguments[0]).{prop} = arguments[1];", selector, text)
            shots.append(Image.open(_io.BytesIO(browser.find_element(By.CSS_SELECTOR, selector).screenshot_as_png)).convert("L"))
        return ImageChops.difference(*shots).getbbox() is not None

    assert pixels_differ("#where", "value") and pixels_differ("#chips .chip-text", "textContent")
    browser.execute_script("document.querySelector('#where').value = '';")

    # Boxes on the detail image, where the labeler put them; a link to the original.
    browser.find_element(By.CSS_SELECTOR, f'#grid .tile[data-id="{dest.id("beach-1.jpg")}"]').click()
    wait.until(lambda d: d.find_element(By.ID, "details").is_displayed())
    wait.until(lambda d: d.execute_script("const i = document.querySelector('.details-image'); return i.complete && i.naturalWidth > 0;"))
    image, face = browser.execute_script(
        "const r = (e) => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };"
        "return [r(document.querySelector('.details-image')), ...[...document.querySelectorAll('.details-frame .box')].map(r)];")
    left, top, width, height = image
    assert abs(face[0] - (left + width * 10 / 640)) < 2 and abs(face[1] - (top + height * 12 / 480)) < 2
    assert abs(face[2] - width * 40 / 640) < 2 and abs(face[3] - height * 48 / 480) < 2
    original = browser.find_element(By.ID, "details-original").get_attribute("href")
    assert httpx.get(original, timeout=10).content == (dest.photos / "beach-1.jpg").read_bytes()
    browser.find_element(By.ID, "details-close").click()

    # The date filter on labeled_at: from tomorrow on, nothing.
    tomorrow = (utcnow() + dt.timedelta(days=1)).date().isoformat()
    browser.execute_script("const i = document.getElementById('date-from'); i.value = arguments[0];"
                           "i.dispatchEvent(new Event('change'));", tomorrow)
    wait.until(lambda d: d.find_element(By.ID, "summary").get_attribute("data-total") == "0")
    assert f"from={tomorrow}" in browser.current_url
    browser.find_element(By.ID, "clear-button").click()
    wait_for_tiles(*BY_NAME)

    # No script errors or blocked resources (the failed thumbnails' 404/422 are expected).
    problems = [entry["message"] for entry in browser.get_log("browser")
                if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]
    assert not problems, problems
