"""OpenSearch Dashboards: top-level person_tags in documents and template, and infra/dashboards/humantag.ndjson.

The saved-objects file is parsed as Dashboards imports it (one JSON object per line) and every field it
names must exist in the index template, at the top level (standard visualizations cannot aggregate
nested fields) and aggregatable. person_tags is then aggregated on a real index.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from humantag.indexers.documents import PERSON_TAGS, person_tags, row_to_document
from humantag.indexers.fields import all_fields
from humantag.indexers.layout import OutputLayout
from humantag.indexers.opensearch.mapping import index_mappings
from humantag.indexers.opensearch.sync import sync_index
from tests.test_search import dataset, write_dest
from humantag.workers.storage import filesystem

SAVED_OBJECTS = Path(__file__).resolve().parents[1] / "infra" / "dashboards" / "humantag.ndjson"
AGGREGATABLE = {"keyword", "long", "integer", "float", "date", "boolean"}


def mapped_field(path: str) -> tuple[dict[str, Any], bool]:
    """(mapping of a dotted field, whether it sits under a nested object)."""
    properties = index_mappings()["properties"]
    nested = False
    node: dict[str, Any] = {}
    for part in path.split("."):
        node = properties[part]
        nested = nested or node.get("type") == "nested"
        properties = node.get("properties", {})
    return node, nested


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAVED_OBJECTS.read_text().splitlines() if line.strip()]


def test_saved_objects_name_fields_of_the_template() -> None:
    objects = saved_objects()
    patterns = {o["id"]: o for o in objects if o["type"] == "index-pattern"}
    visualizations = [o for o in objects if o["type"] == "visualization"]
    assert len(patterns) == 1 and len(visualizations) >= 2
    (pattern,) = patterns.values()
    time_field, _ = mapped_field(pattern["attributes"]["timeFieldName"])
    assert time_field["type"] == "date"
    fields = set()
    for vis in visualizations:
        state = json.loads(vis["attributes"]["visState"])
        search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        (ref,) = [r for r in vis["references"] if r["name"] == search["indexRefName"]]
        assert ref["type"] == "index-pattern" and ref["id"] in patterns
        for agg in state["aggs"]:
            if "field" in agg["params"]:
                mapping, nested = mapped_field(agg["params"]["field"])
                assert mapping["type"] in AGGREGATABLE and not nested, agg["params"]["field"]
                fields.add(agg["params"]["field"])
    assert PERSON_TAGS in fields


def test_person_tags_cover_every_enumerated_person_field() -> None:
    row = {"uri": "s3://b/p/x.jpg", "persons": [
        {"eyewear": "sunglasses", "smiling": True, "accessories": ["bag", "phone"], "age_group": "child"},
        {"eyewear": "sunglasses", "smiling": False, "age_group": None},
    ]}
    tags = row_to_document(row)[PERSON_TAGS]
    assert tags == ["age_group:child", "smiling:true", "smiling:false", "eyewear:sunglasses",
                    "accessories:bag", "accessories:phone"]
    assert PERSON_TAGS not in row_to_document({"uri": "s3://b/p/y.jpg", "persons": []})
    # Every enumeration / yes-no field of a person can become a tag; its values are the schema's.
    for spec in all_fields().values():
        if spec.nested and spec.values:
            value = spec.values[0]
            person = {spec.column: [value] if spec.is_list else value}
            assert person_tags([person]) == [f"{spec.column}:{value}"]
    assert mapped_field(PERSON_TAGS)[0]["type"] == "keyword"


def test_person_tags_aggregate_in_opensearch(search_index, tmp_path) -> None:
    root = str(tmp_path / "out")
    write_dest(root, dataset())
    fs, path = filesystem(root)
    assert sync_index(search_index.settings, fs, OutputLayout(path), "r1").ok
    client = search_index.client()
    client.indices.refresh(index=search_index.settings.index)
    answer = client.search(index=search_index.settings.index, body={
        "size": 0, "aggs": {"tags": {"terms": {"field": PERSON_TAGS, "size": 100}}}})
    counts = {b["key"]: b["doc_count"] for b in answer["aggregations"]["tags"]["buckets"]}
    # Images (not persons) per tag, as the search facets count them; the deleted img08 is not indexed.
    assert counts["eyewear:sunglasses"] == 3 and counts["age_group:child"] == 1 and counts["accessories:phone"] == 1
    assert counts["smiling:true"] == 4


def test_an_index_made_before_person_tags_takes_them(search_index, tmp_path) -> None:
    """An index created by an older humantag (no person_tags in its strict mapping) gets the field on the
    next sync instead of rejecting every document."""
    from humantag.indexers.opensearch.aliases import IndexNames, swap_aliases

    client = search_index.client()
    names = IndexNames(search_index.settings.index)
    old = index_mappings()
    del old["properties"][PERSON_TAGS]
    client.indices.create(index=names.physical(1), body={"mappings": old})
    swap_aliases(client, names, names.physical(1))
    root = str(tmp_path / "out")
    write_dest(root, dataset())
    fs, path = filesystem(root)
    report = sync_index(search_index.settings, fs, OutputLayout(path), "r1")
    assert report.ok and report.documents_failed == 0, report
    assert PERSON_TAGS in client.indices.get_mapping(index=names.physical(1))[names.physical(1)]["mappings"]["properties"]
