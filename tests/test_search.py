"""Search: the same data and the same assertions against both engines (DuckDB over Parquet, OpenSearch).

A small labeled DEST (two shards, one deleted row) is written once per module and,
for OpenSearch, indexed with `sync_index` into an index of its own.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter
from typing import Any, Optional

import pytest

from humantag.indexers.documents import document_id, row_to_document
from humantag.indexers.fields import DEFAULT_FACETS, all_fields
from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.sync import sync_index
from humantag.indexers.parquet_sink import write_shard
from humantag.indexers.search.backends import open_backend
from humantag.indexers.search.model import QueryError, SearchRequest, decode_cursor, encode_cursor, parse_where
from humantag.indexers.search.opensearch_backend import OpenSearchSearchBackend, build_body
from humantag.indexers.search.embedded_backend import EmbeddedSearchBackend
from humantag.indexers.search.parquet_backend import ParquetSearchBackend, text_words
from tests.fixtures.cli import run_cli
from tests.fixtures import opensearch as opensearch_fixtures
from humantag.workers.attributes import Person, Scene
from humantag.workers.records import LabeledImage, records_to_table
from humantag.workers.storage import filesystem

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
NO_OPENSEARCH = {"OPENSEARCH_URL": ""}  # CLI against Parquet even if the suite runs with a real cluster


def uri(n: int) -> str:
    return f"s3://media/photos/img{n:02d}.jpg"


def image(n: int, *, persons: Optional[list[Person]] = None, setting: Optional[str] = None,
          environment: Optional[str] = None, caption: Optional[str] = None, shard: str = "s1",
          **extra: Any) -> LabeledImage:
    values: dict[str, Any] = dict(
        uri=uri(n), status="ok", labeler="humanvlm", labeler_version="1", run_id="r1", shard_id=shard,
        labeled_at=T0 + dt.timedelta(minutes=n), etag=f"e{n}", width=640, height=480, caption=caption,
    )
    if persons is not None:
        values.update(persons=persons, people_count=len(persons), faces_visible=sum(1 for p in persons if p.face_visible))
    if setting or environment:
        values["scene"] = Scene(setting=setting, environment=environment)
    values.update(extra)
    return LabeledImage(**values)


def P(**attrs: Any) -> Person:
    attrs.setdefault("eyewear", "none")
    attrs.setdefault("face_visible", True)
    return Person(**attrs)


def dataset() -> list[LabeledImage]:
    return [
        # One person in sunglasses, ANOTHER smiling: must not match "a smiling person in sunglasses".
        image(1, persons=[P(eyewear="sunglasses", expression="neutral", smiling=False, age_group="adult"),
                          P(expression="smiling", smiling=True, age_group="adult")],
              setting="beach", environment="outdoor", caption="Two friends on a sunny beach"),
        image(2, persons=[P(eyewear="sunglasses", expression="smiling", smiling=True, age_group="adult",
                            upper_clothing="dress", upper_clothing_color="red")],
              setting="beach", environment="outdoor", caption="A smiling woman in a red dress and sunglasses on the beach"),
        image(3, persons=[P(age_group="adult", accessories=["bag", "phone"], action="running to the bus", pose="running"),
                          P(age_group="adult", face_visible=False), P(age_group="senior", expression="serious")],
              setting="street", environment="outdoor", caption="Commuters crossing a busy street"),
        image(4, persons=[P(age_group="child", eyewear="glasses", expression="laughing", headwear="hat",
                            upper_clothing="t-shirt", upper_clothing_color="blue")],
              setting="park", environment="outdoor", caption="A child laughing in the park"),
        image(5, persons=[], setting="office", environment="indoor", caption="An empty office with a red chair",
              shard="s2"),
        image(6, status="error", error_kind="not_an_image", error_message="cannot identify image file", shard="s2",
              labeler="cpu", width=None, height=None),
        image(7, persons=[P(age_group="senior", eyewear="glasses", expression="serious"),
                          P(age_group="adult", eyewear="glasses", expression="smiling", smiling=True,
                            upper_clothing="dress", upper_clothing_color="red")],
              setting="event", environment="indoor", caption="An elderly man and a woman in a long red dress at their wedding",
              shard="s2"),
        # Deleted from the source: never found (unless include_deleted, Parquet only).
        image(8, persons=[P(eyewear="sunglasses", expression="smiling", smiling=True)], setting="beach",
              environment="outdoor", caption="Deleted beach photo with a red dress", shard="s2",
              deleted_at=T0 + dt.timedelta(days=3)),
        image(9, persons=[P(eyewear="sunglasses", age_group="adult", accessories=["microphone"], expression="serious"),
                          P(eyewear="sunglasses", age_group="adult", expression="neutral"),
                          P(age_group="adult", face_visible=False), P(age_group="teen", expression="smiling", smiling=True)],
              setting="stage", environment="indoor", caption="A band playing on stage", shard="s2"),
        image(10, labeler="image-facts", shard="s2"),
    ]


LIVE = [r for r in dataset() if r.deleted_at is None]
ALL_LIVE = sorted(r.uri for r in LIVE)


def uris(*numbers: int) -> list[str]:
    return sorted(uri(n) for n in numbers)


def write_dest(root: str, rows: list[LabeledImage]) -> OutputLayout:
    fs, path = filesystem(root)
    layout = OutputLayout(path)
    by_shard: dict[str, list[LabeledImage]] = {}
    for row in rows:
        by_shard.setdefault(row.shard_id, []).append(row)
    for shard_id, shard_rows in by_shard.items():
        write_shard(fs, layout.labels_file(shard_id), shard_rows)
    return layout


def index_dest(settings, root: str) -> None:
    fs, path = filesystem(root)
    report = sync_index(settings, fs, OutputLayout(path), "r1")
    assert report.ok, report


@pytest.fixture(scope="module")
def dest(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("search") / "out")
    write_dest(root, dataset())
    return root


@pytest.fixture(scope="module")
def labeled_index(search_cluster, dest):
    """One index for the module's read-only tests (the fixture's per-test index would re-index every test)."""
    index = opensearch_fixtures.TestIndex(search_cluster, f"ht-{uuid.uuid4().hex[:10]}")
    index_dest(index.settings, dest)
    yield index
    index.cleanup()


@pytest.fixture(scope="module", params=["parquet", "opensearch"])
def backend(request, dest):
    if request.param == "parquet":
        engine = open_backend(dest, None)
        assert isinstance(engine, EmbeddedSearchBackend)
    else:
        engine = open_backend(dest, request.getfixturevalue("labeled_index").settings)
        assert isinstance(engine, OpenSearchSearchBackend)
    yield engine
    engine.close()


def search(backend, *where: str, text: Optional[str] = None, facets: Optional[list[str]] = None, size: int = 100,
           **extra: Any):
    request = SearchRequest(filters=[parse_where(w) for w in where], text=text, facets=facets or [], size=size, **extra)
    return backend.search(request)


def found(backend, *where: str, text: Optional[str] = None) -> list[str]:
    response = search(backend, *where, text=text)
    assert response.total == len(response.hits)
    return sorted(h.uri for h in response.hits)


# --- filters -------------------------------------------------------------------------------------


def test_person_filters_must_hold_for_one_person(backend):
    assert found(backend, "person.eyewear=sunglasses") == uris(1, 2, 9)
    assert found(backend, "person.expression=smiling") == uris(1, 2, 7, 9)
    # img01: one person in sunglasses, another smiling; img09 likewise: neither is "a smiling person in sunglasses".
    assert found(backend, "person.eyewear=sunglasses", "person.expression=smiling") == uris(2)
    assert found(backend, "person.eyewear=sunglasses", "person.smiling=true") == uris(2)
    assert found(backend, "person.age_group=senior", "person.eyewear=glasses") == uris(7)
    assert found(backend, "person.age_group=senior", "person.eyewear=sunglasses") == []
    # Negation inside a person: someone in sunglasses who is not neutral.
    assert found(backend, "person.eyewear=sunglasses", "person.expression!=neutral") == uris(2, 9)
    assert found(backend, "person.upper_clothing=dress", "person.upper_clothing_color=red") == uris(2, 7)


def test_filters_combine_in_any_order(backend):
    """Person and image-level filters, in every order, with text: the same answer (bound parameters line up)."""
    import itertools

    wheres = ["person.eyewear=sunglasses,glasses", "people_count>=2", "person.expression!=neutral", "scene.setting!=office"]
    expected = found(backend, *wheres)
    assert expected  # the combination finds something, so a mix-up would show
    for order in itertools.permutations(wheres):
        assert found(backend, *order) == expected, order


def test_ranges_any_of_and_negation(backend):
    assert found(backend, "people_count>=2") == uris(1, 3, 7, 9)
    assert found(backend, "people_count>1", "people_count<=3") == uris(1, 3, 7)
    assert found(backend, "people_count<1") == uris(5)
    assert found(backend, "labeled_at>=2024-05-01T12:07:00Z") == uris(7, 9, 10)
    assert found(backend, "labeled_at<2024-05-01T12:02:00+00:00") == uris(1)
    assert found(backend, "scene.setting=beach,park") == uris(2, 1, 4)
    assert found(backend, "person.eyewear=glasses,sunglasses") == uris(1, 2, 4, 7, 9)
    assert found(backend, "person.accessories=phone") == uris(3)
    assert found(backend, "person.accessories=phone,microphone") == uris(3, 9)
    # != keeps images without the field (as OpenSearch's must_not does)
    assert found(backend, "scene.setting!=beach") == uris(3, 4, 5, 6, 7, 9, 10)
    assert found(backend, "scene.setting!=beach,street,park") == uris(5, 6, 7, 9, 10)
    assert found(backend, "status=error") == uris(6)
    assert found(backend, "status!=ok") == uris(6)
    assert found(backend, "labeler=image-facts,cpu") == uris(6, 10)
    assert found(backend, "person.face_visible=false") == uris(3, 9)
    assert found(backend, "bucket=media", "prefix=photos", "people_count=1") == uris(2, 4)
    assert found(backend) == ALL_LIVE


def test_text_match(backend):
    assert found(backend, text="red dress") == uris(2, 7)
    assert found(backend, text="DRESS red") == uris(2, 7)
    assert found(backend, text="woman in red") == uris(2, 7)  # "in" is a stop word in both engines
    assert found(backend, text="beach") == uris(1, 2)
    assert found(backend, text="red chair") == uris(5)
    assert found(backend, text="red dress chair") == []
    assert found(backend, "people_count>=1", "scene.environment=outdoor", text="beach") == uris(1, 2)
    assert found(backend, "caption~busy street") == uris(3)
    assert found(backend, "person.action~running bus") == uris(3)
    assert found(backend, "person.action~running", "person.age_group=senior") == []
    assert found(backend, "error_message~identify") == uris(6)
    assert found(backend, text="the") == []  # nothing but stop words: nothing (as OpenSearch's match)


def test_facets_count_images(backend):
    facets = ["people_count", "scene.setting", "person.eyewear", "person.expression", "person.face_visible",
              "person.accessories", "status", "labeler"]
    response = search(backend, facets=facets, size=0)
    assert response.total == len(LIVE) and response.hits == [] and response.next_cursor is None
    got = {name: {b.value: b.count for b in buckets} for name, buckets in response.facets.items()}
    assert got == {name: expected_facet(name, LIVE) for name in facets}
    # Two people in sunglasses on img09: one image.
    assert got["person.eyewear"] == {"sunglasses": 3, "none": 3, "glasses": 2}
    assert got["person.face_visible"] == {True: 6, False: 2}
    # Order: most images first, then by value.
    assert [b.value for b in response.facets["person.expression"]] == ["smiling", "serious", "neutral", "laughing"]

    narrowed = search(backend, "scene.setting=beach", facets=["person.expression", "people_count"], size=0)
    assert {b.value: b.count for b in narrowed.facets["person.expression"]} == {"smiling": 2, "neutral": 1}
    assert {b.value: b.count for b in narrowed.facets["people_count"]} == {1: 1, 2: 1}

    top = search(backend, facets=["person.age_group"], facet_size=2, size=0)
    assert [(b.value, b.count) for b in top.facets["person.age_group"]] == [("adult", 5), ("senior", 2)]

    defaults = backend.search(SearchRequest(size=0))
    assert list(defaults.facets) == list(DEFAULT_FACETS)


def expected_facet(name: str, rows: list[LabeledImage]) -> dict[Any, int]:
    spec = all_fields()[name]
    counts: Counter = Counter()
    for row in rows:
        doc = row_to_document(records_to_table([row]).to_pylist()[0])
        if spec.nested:
            values = set()
            for person in doc.get("persons", []):
                value = person.get(spec.column)
                values.update(value if isinstance(value, list) else [value] if value is not None else [])
        else:
            value: Any = doc
            for part in spec.path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values = {value} if value is not None else set()
        counts.update(values)
    return dict(counts)


def test_documents_ids_and_get(backend):
    response = search(backend, "person.eyewear=sunglasses", "person.expression=smiling")
    (hit,) = response.hits
    record = next(r for r in LIVE if r.uri == uri(2))
    expected = row_to_document(records_to_table([record]).to_pylist()[0])
    assert hit.uri == uri(2) and hit.id == document_id(uri(2))
    assert hit.document == expected
    assert expected["bucket"] == "media" and expected["prefix"] == "photos"
    assert backend.get(document_id(uri(2))) == expected
    assert backend.get(document_id(uri(8))) is None  # deleted
    assert backend.get(document_id("s3://media/photos/none.jpg")) is None
    assert backend.get("not-an-id") is None
    assert "secret" not in backend.describe()


def test_pages_follow_the_cursor(backend):
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        response = search(backend, size=3, after=after)
        assert response.total == len(LIVE)
        seen += [h.uri for h in response.hits]
        pages += 1
        after = response.next_cursor
        if after is None:
            break
    assert seen == ALL_LIVE and pages == 3  # 3 + 3 + 3: no empty last page

    scored: list[str] = []
    after = None
    while True:
        response = search(backend, text="red", size=1, after=after)
        assert response.total == 3
        scored += [h.uri for h in response.hits]
        after = response.next_cursor
        if after is None:
            break
    assert sorted(scored) == uris(2, 5, 7) and len(scored) == 3


def test_one_backend_serves_many_threads(backend):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> list[str]:
        where = ["person.eyewear=sunglasses", "people_count>=2", "scene.setting=beach"][i % 3]
        return found(backend, where)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(one, range(12)))
    assert answers[0::3] == [uris(1, 2, 9)] * 4
    assert answers[1::3] == [uris(1, 3, 7, 9)] * 4
    assert answers[2::3] == [uris(1, 2)] * 4


@pytest.mark.parametrize("text", ["*:* OR x", '") OR 1=1 --', '{"script": {"source": "return true"}}',
                                  "people_count:>0", "' OR ''='", "caption:*", "/.*/", "\\"])
def test_injected_text_is_literal_words(backend, text):
    assert search(backend, text=text).total == 0


@pytest.mark.parametrize("where", [
    "people_count>=2 OR 1=1", "persons.eyewear'; drop table labels; --=x", "person.eyewear=monocle",
    "nope=1", "people_count=many", "person.eyewear>sunglasses", "caption=red", "people_count~2",
    "uri", "=x", "labeled_at>=yesterday", "person.smiling=maybe", "scene.setting=beach' OR '1'='1",
    "person.eyewear=sunglasses) OR (1=1", "", "a" * 300 + "=1",
])
def test_bad_where_is_a_one_line_query_error(where):
    with pytest.raises(QueryError) as info:
        parse_where(where)
        pytest.fail("accepted")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("where", ["uri=*", "uri=' OR ''='", "caption~*", "error_kind=x') OR true --",
                                   'format={"script":"1"}', "prefix=photos/*"])
def test_odd_values_are_literals(backend, where):
    assert search(backend, where).total == 0
    assert search(backend).total == len(LIVE)  # and nothing was dropped


@pytest.mark.parametrize("cursor", ["garbage", "!!!", encode_cursor([1, 2, 3]), encode_cursor([True]),
                                    "eyJzY3JpcHQiOiAxfQ"])
def test_bad_cursors(backend, cursor):
    with pytest.raises(QueryError):
        search(backend, after=cursor)


def test_bad_facets(backend):
    for facet in ["caption", "uri", "nope"]:
        with pytest.raises(QueryError):
            search(backend, facets=[facet])


def test_text_words():
    assert text_words("A red DRESS, in the park!") == ["red", "dress", "park"]
    assert text_words('") OR 1=1 --') == ["1"]
    assert text_words("*:*") == []


def test_opensearch_body_uses_no_query_syntax():
    request = SearchRequest(filters=[parse_where("person.eyewear=sunglasses"), parse_where("person.smiling=true"),
                                     parse_where("people_count>=2"), parse_where("scene.setting!=beach"),
                                     parse_where("person.action~running")],
                            text="*:* OR x", facets=["person.eyewear", "people_count"])
    body = build_body(request)
    text = json.dumps(body)
    for forbidden in ("query_string", "simple_query_string", "regexp", "wildcard", "script", "prefix\""):
        assert forbidden not in text
    nested = [c for c in body["query"]["bool"]["must"] if "nested" in c]
    assert len(nested) == 1  # every person condition in one nested query
    assert body["sort"] == [{"_score": "desc"}, {"uri": "asc"}] and body["track_total_hits"] is True
    assert build_body(SearchRequest())["sort"] == [{"uri": "asc"}]


def test_scored_pages_with_equal_scores(search_cluster, search_index, tmp_path):
    """Ties in _score are broken by uri; search_after must neither skip nor repeat them."""
    root = str(tmp_path / "out")
    write_dest(root, [image(n, caption="a red kite over the sea") for n in range(1, 6)])
    index_dest(search_index.settings, root)
    for engine in (open_backend(root, None), open_backend(root, search_index.settings)):
        seen, after = [], None
        for _ in range(5):  # a broken cursor must not loop forever
            response = search(engine, text="kite", size=2, after=after)
            seen += [h.uri for h in response.hits]
            after = response.next_cursor
            if after is None:
                break
        engine.close()
        if seen != uris(1, 2, 3, 4, 5) and isinstance(engine, OpenSearchSearchBackend) and not search_cluster.real:
            pytest.xfail("osmem compares search_after with a _score more precise than the one it returns, so it "
                         "skips or repeats ties; OpenSearch scores are float32 and round-trip exactly")
        assert seen == uris(1, 2, 3, 4, 5), engine.describe()


# --- Parquet only: deleted rows, missing DEST ------------------------------------------------------


def test_parquet_deleted_rows_only_on_request(dest):
    engine = ParquetSearchBackend(dest)
    try:
        assert found(engine, text="red dress") == uris(2, 7)
        response = search(engine, text="red dress", include_deleted=True)
        assert sorted(h.uri for h in response.hits) == uris(2, 7, 8)
        assert response.hits[-1].document["deleted_at"].startswith("2024-05-04")
        assert search(engine, include_deleted=True).total == len(LIVE) + 1
    finally:
        engine.close()


def test_parquet_include_deleted_keeps_one_row_per_uri(tmp_path):
    # img02 was deleted, then put back and labeled again: one live row and one deleted row.
    rows = dataset() + [image(2, caption="old labels of a deleted copy", shard="s0", deleted_at=T0)]
    root = str(tmp_path / "out")
    write_dest(root, rows)
    engine = ParquetSearchBackend(root)
    try:
        response = search(engine, include_deleted=True)
        assert [h.uri for h in response.hits] == sorted(ALL_LIVE + [uri(8)])
        assert next(h for h in response.hits if h.uri == uri(2)).document["caption"].startswith("A smiling woman")
    finally:
        engine.close()


@pytest.mark.parametrize("old_name", ["a-old", "z-old"])
def test_parquet_files_of_an_older_schema(tmp_path, old_name):
    """A label file without a column of today's schema (written before it existed) reads as nulls."""
    import pyarrow.parquet as pq

    root = str(tmp_path / "out")
    layout = write_dest(root, [r for r in dataset() if r.shard_id == "s1"])
    old = records_to_table([r for r in dataset() if r.shard_id == "s2"]).drop_columns(["gated", "quality", "phash"])
    pq.write_table(old, f"{layout.labels_dir}/{old_name}.parquet")
    engine = ParquetSearchBackend(root)
    try:
        assert found(engine) == ALL_LIVE
        assert found(engine, "person.eyewear=sunglasses", "person.expression=smiling") == uris(2)
        assert found(engine, "quality.blurry=false") == []
        assert search(engine, facets=["quality.blurry", "people_count"]).facets["people_count"][0].count == 2
    finally:
        engine.close()


def test_open_backend_errors(tmp_path):
    from humantag.indexers.search.model import SearchUnavailable

    with pytest.raises(SearchUnavailable):
        open_backend(None, None)
    with pytest.raises(SearchUnavailable, match="no such folder"):
        open_backend(str(tmp_path / "missing"), None)
    (tmp_path / "photos").mkdir()  # a folder without labels/ (the source of a run, a typo): not "0 images"
    with pytest.raises(SearchUnavailable, match="no labels/"):
        open_backend(str(tmp_path / "photos"), None)
    (tmp_path / "empty" / "labels").mkdir(parents=True)
    engine = open_backend(str(tmp_path / "empty"), None)  # labels/ with no shard committed yet: nothing found
    try:
        response = engine.search(SearchRequest())
        assert response.total == 0 and response.hits == [] and response.facets["people_count"] == []
    finally:
        engine.close()


def test_opensearch_without_index_is_unavailable(search_index):
    from humantag.indexers.search.model import SearchUnavailable

    engine = OpenSearchSearchBackend(search_index.settings)
    with pytest.raises(SearchUnavailable, match="no index"):
        engine.search(SearchRequest())
    engine.close()


# --- more than max_result_window hits ------------------------------------------------------------

BIG = 10_100


def big_rows() -> list[LabeledImage]:
    scenes = [Scene(setting=s, environment="outdoor") for s in ("beach", "street", "park", "office")]
    template = image(0, persons=[P(eyewear="sunglasses")], setting="beach", environment="outdoor")
    return [
        template.model_copy(update=dict(uri=f"s3://media/big/{i:06d}.jpg", shard_id=f"b{i % 4}", people_count=i % 5,
                                        scene=scenes[i % 4], caption="crowd" if i % 2 else "portrait"))
        for i in range(BIG)
    ]


@pytest.mark.parametrize("engine_name", ["parquet", "opensearch"])
def test_paging_past_ten_thousand_hits(engine_name, tmp_path, request):
    root = str(tmp_path / "out")
    rows = big_rows()
    write_dest(root, rows)
    if engine_name == "opensearch":
        index = request.getfixturevalue("search_index")
        index_dest(index.settings, root)
        engine = open_backend(root, index.settings)
    else:
        engine = open_backend(root, None)
    try:
        started = time.perf_counter()
        seen: Counter = Counter()
        after = None
        pages = 0
        while True:
            response = engine.search(SearchRequest(size=1000, after=after, facets=["scene.setting"] if pages == 0 else []))
            assert response.total == BIG
            if pages == 0:
                assert {b.value: b.count for b in response.facets["scene.setting"]} == {
                    "beach": 2525, "street": 2525, "park": 2525, "office": 2525}
            seen.update(h.uri for h in response.hits)
            pages += 1
            after = response.next_cursor
            if after is None:
                break
        assert pages == 11 and len(seen) == BIG and set(seen.values()) == {1}
        assert sorted(seen) == sorted(r.uri for r in rows)

        crowd = engine.search(SearchRequest(filters=[parse_where("people_count>=3")], text="crowd", size=1000))
        assert crowd.total == sum(1 for i in range(BIG) if i % 2 and i % 5 >= 3)
        print(f"{engine_name}: {pages} pages in {time.perf_counter() - started:.1f}s")
    finally:
        engine.close()


# --- the command line ----------------------------------------------------------------------------


def jsonl(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return lines[:-1], lines[-1]


@pytest.fixture(params=["parquet", "opensearch"])
def cli_target(request, dest) -> tuple[list[str], dict[str, str]]:
    if request.param == "parquet":
        return [dest], NO_OPENSEARCH
    index = request.getfixturevalue("labeled_index")
    return [], index.env()


def test_cli_jsonl(cli_target):
    args, env = cli_target
    result = run_cli("search", *args, "--where", "person.eyewear=sunglasses", "--where", "person.expression=smiling",
                     "--facet", "scene.setting", "--format", "jsonl", env=env)
    assert result.returncode == 0, result.stderr
    hits, summary = jsonl(result.stdout)
    assert [h["uri"] for h in hits] == [uri(2)]
    assert hits[0]["id"] == document_id(uri(2)) and hits[0]["document"]["persons"][0]["eyewear"] == "sunglasses"
    assert summary["total"] == 1 and summary["next_cursor"] is None
    assert summary["facets"] == {"scene.setting": [{"value": "beach", "count": 1}]}

    first = run_cli("search", *args, "--text", "red dress", "--limit", "1", "--no-facets", "--format", "jsonl", env=env)
    hits, summary = jsonl(first.stdout)
    assert summary["total"] == 2 and len(hits) == 1 and summary["next_cursor"] and summary["facets"] == {}
    second = run_cli("search", *args, "--text", "red dress", "--limit", "1", "--no-facets", "--format", "jsonl",
                     "--after", summary["next_cursor"], env=env)
    more, last = jsonl(second.stdout)
    assert sorted([hits[0]["uri"], more[0]["uri"]]) == uris(2, 7) and last["next_cursor"] is None


def test_cli_table(cli_target):
    args, env = cli_target
    result = run_cli("search", *args, "--where", "people_count>=2", "--where", "scene.environment=outdoor",
                     "--limit", "1", env={**env, "COLUMNS": "160"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 images match" in out
    assert uri(1) in out and uri(3) not in out
    assert "Two friends on a sunny beach" in out
    assert "person.eyewear" in out and "sunglasses" in out  # facets
    cursor = out.split("--after ", 1)[1].split()[0]
    assert decode_cursor(cursor) == [uri(1)]


def test_cli_errors_are_one_line(dest):
    cases = [
        ["search", dest, "--where", "people_count>=2 OR 1=1"],
        ["search", dest, "--where", "persons.eyewear'; drop table labels; --=x"],
        ["search", dest, "--where", "nope=1"],
        ["search", dest, "--after", "garbage"],
        ["search", dest, "--facet", "caption"],
        ["search", dest, "--limit", "5000"],
        ["search", dest + "/missing"],
        ["search"],
        ["search", "--engine", "opensearch"],
    ]
    for args in cases:
        result = run_cli(*args, env=NO_OPENSEARCH)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("humantag: error: "), (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
    down = run_cli("search", "--where", "people_count>=2", env={"OPENSEARCH_URL": "http://ht:s3cret@127.0.0.1:1"})
    assert down.returncode == 2 and down.stderr.strip() == "humantag: error: OpenSearch at http://127.0.0.1:1 unreachable"


def test_cli_fields_and_help():
    result = run_cli("search", "--fields", "--format", "jsonl", env=NO_OPENSEARCH)
    assert result.returncode == 0, result.stderr
    fields = {f["name"]: f for f in map(json.loads, result.stdout.splitlines())}
    assert fields["person.eyewear"]["values"] == ["none", "glasses", "sunglasses"] and fields["person.eyewear"]["person"]
    assert fields["caption"]["kind"] == "text" and not fields["caption"]["facet"]
    table = run_cli("search", "--fields", env={**NO_OPENSEARCH, "COLUMNS": "200"})
    assert table.returncode == 0 and "person.eyewear" in table.stdout and "sunglasses" in table.stdout
    help_text = run_cli("search", "--help", env={"COLUMNS": "200"}).stdout
    for needle in ("people_count>=2", "person.eyewear=sunglasses", "--after", "caption~"):
        assert needle in help_text


def test_parquet_dest_on_s3(s3_server):
    """DEST on S3: the same answers through fsspec, from the API and the command line."""
    from humantag.workers.storage import StorageOptions

    bucket = s3_server.new_bucket("search")
    root = f"s3://{bucket}/out"
    storage = StorageOptions(endpoint_url=s3_server.endpoint, key=s3_server.access_key,
                             secret=s3_server.secret_key, region="us-east-1")
    fs, path = filesystem(root, storage)
    for shard_id in ("s1", "s2"):
        write_shard(fs, OutputLayout(path).labels_file(shard_id), [r for r in dataset() if r.shard_id == shard_id])

    engine = open_backend(root, None, storage)
    try:
        assert found(engine, "person.eyewear=sunglasses", "person.expression=smiling") == uris(2)
        assert found(engine, "bucket=media", text="red dress") == uris(2, 7)
        assert engine.get(document_id(uri(7)))["caption"].startswith("An elderly man")
    finally:
        engine.close()

    result = run_cli("search", root, "--where", "people_count>=2", "--facet", "scene.setting", "--format", "jsonl",
                     env={**s3_server.env(), **NO_OPENSEARCH})
    assert result.returncode == 0, result.stderr
    hits, summary = jsonl(result.stdout)
    assert [h["uri"] for h in hits] == uris(1, 3, 7, 9) and summary["total"] == 4
    missing = run_cli("search", f"s3://{bucket}/nothing-here", env={**s3_server.env(), **NO_OPENSEARCH})
    assert missing.returncode == 2 and missing.stderr.startswith("humantag: error: ") and "Traceback" not in missing.stderr
