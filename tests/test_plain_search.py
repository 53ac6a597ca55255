"""Plain-language queries: the filters each one must produce (from the schema), run on both engines.

The dataset is tests/test_search.py's (nine live images, one deleted). Each row of QUERIES is
(query, the --where filters it must become, the images it must find or None). The table covers
counts, every enumerated person and scene field, synonyms, person grouping, negation and nonsense;
`test_table_covers_every_enumerated_field` keeps it that way when the schema grows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest

from humantag.indexers.fields import all_fields
from humantag.indexers.search.model import QueryError, SearchRequest, parse_where
from humantag.indexers.search.plain import interpret
from tests.test_search import LIVE, backend, dest, labeled_index, uri, uris  # noqa: F401 - fixtures

ALL = [int(r.uri[-6:-4]) for r in LIVE]

QUERIES: list[tuple[str, list[str], Optional[list[int]]]] = [
    # counts
    ("two people, one in sunglasses, on a beach", ["people_count=2", "person.eyewear=sunglasses", "scene.setting=beach"], [1]),
    ("a crowd", ["people_count>=5"], []),
    ("nobody", ["people_count=0"], [5]),
    ("no people in an office", ["people_count=0", "scene.setting=office"], [5]),
    ("nobody outdoors", ["people_count=0", "scene.environment=outdoor"], []),
    ("at least 3 people", ["people_count>=3"], [3, 9]),
    ("3+ people", ["people_count>=3"], [3, 9]),
    ("more than two people indoors", ["people_count>2", "scene.environment=indoor"], [9]),
    ("a couple", ["people_count=2"], [1, 7]),
    ("two faces", ["faces_visible=2"], [1, 3, 7]),
    ("two kids", ["people_count=2", "person.age_group=child"], []),
    ("a happy couple", ["people_count=2", "person.smiling=true"], [1, 7]),
    # one person, every enumerated field, synonyms
    ("a child in a red jacket", ["person.age_group=child", "person.upper_clothing=jacket", "person.upper_clothing_color=red"], []),
    ("a child in a blue t shirt", ["person.age_group=child", "person.upper_clothing=t-shirt", "person.upper_clothing_color=blue"], [4]),
    ("shades", ["person.eyewear=sunglasses"], [1, 2, 9]),
    ("a kid", ["person.age_group=child"], [4]),
    ("someone in crimson", ["person.upper_clothing_color=red"], [2, 7]),
    ("a smiling woman in sunglasses", ["person.smiling=true", "person.eyewear=sunglasses"], [2]),
    ("laughing child in a hat", ["person.expression=laughing", "person.age_group=child", "person.headwear=hat"], [4]),
    ("a teenager", ["person.age_group=teen"], [9]),
    ("an elderly man", ["person.age_group=senior"], [3, 7]),
    ("adults outdoors", ["person.age_group=adult", "scene.environment=outdoor"], [1, 2, 3]),
    ("someone running", ["person.pose=running"], [3]),
    ("serious people on stage", ["person.expression=serious", "scene.setting=stage"], [9]),
    ("a sad kid", ["person.expression=sad", "person.age_group=child"], []),
    ("a surprised face", ["person.expression=surprised"], []),
    ("a man with a beard", ["person.facial_hair=beard"], []),
    ("a bald man with stubble", ["person.hair_length=bald", "person.facial_hair=stubble"], []),
    ("blonde woman with long hair", ["person.hair_color=blond", "person.hair_length=long"], []),
    ("a person in a gray hoodie and black jeans", ["person.upper_clothing=hoodie", "person.upper_clothing_color=gray",
                                                    "person.lower_clothing=jeans", "person.lower_clothing_color=black"], []),
    ("woman wearing a mask", ["person.face_covering=mask"], []),
    ("a person in a veil", ["person.face_covering=veil"], []),
    ("someone in a cap", ["person.headwear=cap"], []),
    ("a woman in a headscarf", ["person.headwear=headscarf"], []),
    ("someone in a bikini", ["person.upper_clothing=swimwear"], []),
    ("a girl in a skirt", ["person.age_group=child", "person.lower_clothing=skirt"], []),
    ("in a suit and tie", ["person.upper_clothing=suit", "person.accessories=tie"], []),
    ("a man in a black suit and red tie", ["person.upper_clothing=suit", "person.upper_clothing_color=black",
                                           "person.accessories=tie"], []),  # a tie has no colour in the schema
    ("a feminine person", ["person.gender_presentation=feminine"], []),
    ("sitting on the beach", ["person.pose=sitting", "scene.setting=beach"], []),
    ("walking in the mountains", ["person.pose=walking", "scene.setting=mountain"], []),
    # several people: person2.* is another person
    ("a man in glasses with a child in sunglasses", ["person.eyewear=glasses", "person2.age_group=child",
                                                     "person2.eyewear=sunglasses"], []),
    ("a senior in glasses and a woman in a red dress", ["person.age_group=senior", "person.eyewear=glasses",
                                                        "person2.upper_clothing=dress", "person2.upper_clothing_color=red"], [7]),
    ("two people, one smiling, one in glasses", ["people_count=2", "person.smiling=true", "person2.eyewear=glasses"], [7]),
    ("person with a bag and a phone", ["person.accessories=bag", "person2.accessories=phone"], [3]),
    # negation
    ("no face visible", ["faces_visible=0", "people_count>=1"], []),
    ("without glasses", ["person.eyewear!=glasses"], [1, 2, 3, 9]),
    ("not smiling", ["person.smiling=false"], [1]),
    ("no hat", ["person.headwear!=hat"], [1, 2, 3, 7, 9]),
    ("a man without a beard", ["person.facial_hair!=beard"], [1, 2, 3, 4, 7, 9]),
    ("not on a beach", ["scene.setting!=beach"], [3, 4, 5, 6, 7, 9, 10]),
    ("not in red", ["person.upper_clothing_color!=red"], [1, 3, 4, 7, 9]),
    # scene
    ("beach or park", ["scene.setting=beach,park"], [1, 2, 4]),
    ("a party", ["scene.setting=event"], [7]),
    ("in the snow", ["scene.setting=snow"], []),
    # words the schema does not know: caption words; nonsense
    ("people on a busy street", ["scene.setting=street", "caption~busy"], [3]),
    ("a singer with a mic", ["person.accessories=microphone", "caption~singer"], []),
    ("a studio portrait", ["scene.setting=studio", "caption~portrait"], []),
    ("sunny friends", ["caption~sunny"], [1]),  # "friends": people, not a caption word
    ("xyzzy plugh", ["caption~xyzzy plugh"], []),
    ("the the of a", [], ALL),
]


@pytest.mark.parametrize("query, where, _", QUERIES, ids=[q for q, _, _ in QUERIES])
def test_query_becomes_these_filters(query: str, where: list[str], _) -> None:
    interpretation = interpret(query)
    assert interpretation.where == where
    # What is printed is what runs: every filter reads back from its --where text.
    assert [parse_where(w) for w in interpretation.where] == interpretation.filters


def test_table_covers_every_enumerated_field() -> None:
    assert len(QUERIES) >= 40
    used = {w.split("=")[0].split("!")[0].replace("person2.", "person.") for _, where, _ in QUERIES for w in where}
    enumerated = {s.name for s in all_fields().values()
                  if s.values and (s.nested or s.name.startswith("scene."))}
    assert enumerated <= used, enumerated - used


def test_queries_find_the_same_images_on_both_engines(backend) -> None:  # noqa: F811 - fixture
    for query, _, expected in QUERIES:
        response = backend.search(SearchRequest(filters=interpret(query).filters, facets=[], size=100))
        got = sorted(h.uri for h in response.hits)
        assert response.total == len(got)
        if expected is not None:
            assert got == uris(*expected), (query, backend.describe())


def test_words_it_cannot_use_are_reported() -> None:
    assert interpret("a man in a black suit and red tie").ignored == ["red"]
    assert interpret("no unicorns").ignored == ["unicorns"] and interpret("no unicorns").filters == []


def test_deterministic_and_bounded() -> None:
    query = "two people, one in sunglasses, on a beach"
    assert all(interpret(query).where == interpret(query).where for _ in range(3))
    for bad in ("", "   ", "x" * 600):
        with pytest.raises(QueryError):
            interpret(bad)
    # Never more people than the filter syntax can name, whatever the query.
    many = interpret(", ".join(["a man in glasses", "a child in a hat"] * 8))
    assert max(f.person for f in many.filters) <= 9


def test_never_produced_fields_are_named_on_both_engines(backend) -> None:  # noqa: F811 - fixture
    response = backend.search(SearchRequest(filters=interpret("a feminine person in a helmet").filters, facets=[]))
    assert response.total == 0
    assert [n.field for n in response.not_produced] == ["person.gender_presentation"]  # headwear: some rows have it
    (note,) = response.not_produced
    assert note.labelers[0] == "humanvlm" and "docs/humanvlm.md" in note.docs
    assert "does not produce" in note.message or "do not produce" in note.message
    # A field the rows do have: an honest plain 0.
    assert backend.search(SearchRequest(filters=[parse_where("person.eyewear=sunglasses"),
                                                 parse_where("person.age_group=child")])).not_produced == []


def test_cli_prints_the_interpretation(dest, monkeypatch, capsys) -> None:  # noqa: F811 - fixture
    from tests.test_readme_search import run_cli

    code, out, err = run_cli(["search", dest, "two people, one in sunglasses, on a beach", "--no-facets"], monkeypatch, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ("interpreted as: --where people_count=2 --where person.eyewear=sunglasses "
                        "--where scene.setting=beach")
    assert "1 image matches" in out and uri(1) in out

    code, out, err = run_cli(["search", dest, "--query", "a feminine person", "--format", "jsonl"], monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["total"] == 0 and summary["interpreted"] == ["person.gender_presentation=feminine"]
    assert summary["not_produced"][0]["field"] == "person.gender_presentation"
    assert "docs/humanvlm.md" in summary["not_produced"][0]["message"]

    code, _, err = run_cli(["search", str(Path(dest) / "labels"), "kid"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "no labels/" in err


def test_unknown_fields_suggest_values_and_person_numbers_read_back() -> None:
    with pytest.raises(QueryError, match=r"did you mean person\.eyewear=glasses"):
        parse_where("person.glasses=true")
    with pytest.raises(QueryError, match=r"did you mean scene\.setting=beach"):
        parse_where("scene.beach=yes")
    second = parse_where("person2.eyewear=sunglasses,glasses")
    assert second.person == 2 and second.field == "person.eyewear" and second.where == "person2.eyewear=sunglasses,glasses"
    for bad in ("person0.eyewear=glasses", "person2.people_count=1", "person12.eyewear=glasses"):
        with pytest.raises(QueryError):
            parse_where(bad)


def test_each_person_is_one_nested_query_in_opensearch() -> None:
    from humantag.indexers.search.opensearch_backend import build_body

    body = build_body(SearchRequest(filters=interpret("a man in glasses with a child in sunglasses").filters))
    nested = [c["nested"] for c in body["query"]["bool"]["filter"] if "nested" in c]
    assert [len(n["query"]["bool"]["filter"]) for n in nested] == [1, 2]


def test_with_opensearch_a_lone_argument_is_the_query(labeled_index, monkeypatch, capsys) -> None:  # noqa: F811
    from tests.test_readme_search import run_cli

    for name, value in labeled_index.env().items():
        monkeypatch.setenv(name, value)
    code, out, err = run_cli(["search", "two people, one in sunglasses, on a beach", "--format", "jsonl"], monkeypatch, capsys,
                             opensearch=True)
    assert code == 0, err
    hits = [json.loads(line) for line in out.splitlines()[:-1]]
    assert [h["uri"] for h in hits] == [uri(1)]
