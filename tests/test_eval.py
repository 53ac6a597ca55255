"""`humantag eval`: metric code on hand-made rows, then the cpu labeler on the devset through Ray actors."""

from __future__ import annotations

import json
import sys

import pyarrow.parquet as pq
import pytest

from humantag.flows.cli import command
from humantag.flows.evaluation import evaluate, load_labels, load_predictions
from tests.fixtures.devset import DEVSET_LABELS, decode_files
from humantag.workers.labelers import LabelerOptions
from humantag.workers.records import records_to_table


def _row(name: str, people: int, boxes: list[tuple[int, int, int, int]], **person) -> dict:
    persons = [{"face_box": {"x": x, "y": y, "w": w, "h": h, "score": 0.9}, **person} for x, y, w, h in boxes]
    return {"uri": f"s3://bucket/archive/{name}", "status": "ok", "people_count": people, "persons": persons, "scene": None}


def test_metrics_on_hand_made_rows() -> None:
    labels = {
        "a.jpg": {"image": "a.jpg", "people_count": 2, "faces_visible": 2, "face_centers": [[50, 50], [150, 50]], "smiling": True},
        "b.jpg": {"image": "b.jpg", "people_count": 0, "faces_visible": 0, "face_centers": [], "smiling": None},
        "c.jpg": {"image": "c.jpg", "people_count": 3, "faces_visible": 1, "face_centers": [[10, 10]], "smiling": False},
        "d.jpg": {"image": "d.jpg", "people_count": 1},
    }
    rows = {
        # One box covers the first centre, a big box covers both: one-to-one matching counts 2 matches.
        "a.jpg": _row("a.jpg", 2, [(30, 30, 40, 40), (0, 0, 200, 100)], smiling=True),
        "b.jpg": _row("b.jpg", 1, [(0, 0, 10, 10)]),  # a false face
        "c.jpg": _row("c.jpg", 1, [], smiling=None),
        "x.jpg": _row("x.jpg", 1, []),  # not labeled: ignored
    }
    report = evaluate(rows, labels)
    assert (report.matched, report.unmatched_labels) == (3, ["d.jpg"])
    assert report.people_count.images == 3
    assert report.people_count.exact == pytest.approx(1 / 3, abs=1e-3)
    assert report.people_count.within_one == pytest.approx(2 / 3, abs=1e-3)
    faces = report.faces
    assert (faces.labeled_faces, faces.predicted_faces, faces.matched) == (3, 3, 2)
    assert faces.precision == pytest.approx(2 / 3, abs=1e-3) and faces.recall == pytest.approx(2 / 3, abs=1e-3)
    assert faces.presence_accuracy == pytest.approx(1 / 3, abs=1e-3)  # b has a false face, c missed its face
    # Gate: a and c (with people) found someone, b (nobody) was not held back; d has no row.
    assert (report.gate.people_images, report.gate.passed, report.gate.empty_images, report.gate.held_back) == (2, 2, 1, 0)
    assert report.gate.recall == 1.0 and report.gate.held_back_share == 0.0
    smiling = report.attributes["smiling"]
    assert (smiling.labeled, smiling.answered, smiling.correct) == (2, 1, 1)
    assert smiling.coverage == 0.5 and smiling.accuracy == 1.0


def test_gate_rows_and_faces_too_small_to_score() -> None:
    labels = {
        "p.jpg": {"image": "p.jpg", "people_count": 2, "face_centers": [[50, 50]], "small_face_centers": [[200, 20]]},
        "q.jpg": {"image": "q.jpg", "people_count": 1},
        "e.jpg": {"image": "e.jpg", "people_count": 0},
    }
    rows = {
        # A box on the small face is neither a hit nor a false face.
        "p.jpg": {**_row("p.jpg", 2, [(40, 40, 20, 20), (195, 15, 10, 10)]), "gated": False},
        "q.jpg": {**_row("q.jpg", 0, []), "gated": True},  # a person the gate skipped
        "e.jpg": {**_row("e.jpg", 0, []), "gated": True},
    }
    report = evaluate(rows, labels)
    assert (report.faces.labeled_faces, report.faces.predicted_faces, report.faces.matched) == (1, 1, 1)
    assert report.gate.recall == 0.5 and report.gate.held_back_share == 1.0


def test_error_rows_are_not_scored() -> None:
    labels = {"a.jpg": {"image": "a.jpg", "people_count": 1}}
    rows = {"a.jpg": {"uri": "file:///x/a.jpg", "status": "error", "people_count": None, "persons": None}}
    report = evaluate(rows, labels)
    assert report.error_rows == 1 and report.people_count.images == 0 and report.people_count.exact is None


def _run_cli(args: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["humantag", *args])
    with pytest.raises(SystemExit) as exit_info:
        command()
    return exit_info.value.code or 0


def test_cpu_labeler_on_the_devset_through_ray_then_eval(ray_local, devset_photos, tmp_path, monkeypatch, capsys) -> None:
    import ray

    from humantag.workers.actors import LabelerActor

    actor = LabelerActor.options(num_cpus=1).remote("cpu", LabelerOptions())
    try:
        images = decode_files(devset_photos, 1024)
        rows = ray.get(actor.label.remote(images, "eval-run", "shard-0"))
    finally:
        ray.kill(actor)
    (tmp_path / "out" / "labels").mkdir(parents=True)
    pq.write_table(records_to_table(rows), tmp_path / "out" / "labels" / "shard-0.parquet")

    out_json = tmp_path / "metrics.json"
    assert _run_cli(["eval", str(tmp_path / "out"), "--labels", str(DEVSET_LABELS), "--json", str(out_json)], monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "people count exact" in printed and "face recall" in printed and "gate recall" in printed
    report = json.loads(out_json.read_text())
    # What the cpu labeler really reaches on the six devset photos:
    assert report["matched"] == 6 and report["error_rows"] == 0
    assert report["people_count"] == {"images": 6, "exact": 1.0, "within_one": 1.0, "mean_abs_error": 0.0}
    assert report["faces"]["precision"] == 1.0 and report["faces"]["recall"] == 1.0
    assert report["faces"]["presence_accuracy"] == 1.0
    assert report["gate"]["recall"] == 1.0 and report["gate"]["held_back_share"] == 1.0
    attrs = report["attributes"]
    assert attrs["smiling"] == {"labeled": 2, "answered": 1, "correct": 1, "accuracy": 1.0, "coverage": 0.5}
    assert attrs["upper_clothing_color"]["correct"] == 2 and attrs["upper_clothing_color"]["answered"] == 2
    # Not determined by OpenCV's detectors: never answered, so never wrong.
    for name in ("eyewear", "headwear", "setting", "age_group"):
        assert attrs[name]["answered"] == 0 and attrs[name]["coverage"] == 0.0


def test_eval_on_lfw_crops(lfw_devset, tmp_path, monkeypatch) -> None:
    from humantag.workers.actors import LabelerReplica

    paths, labels = lfw_devset
    replica = LabelerReplica("cpu", LabelerOptions())
    rows = replica.label(decode_files(paths, 1024), "lfw", "s0")
    (tmp_path / "labels" / "part").mkdir(parents=True)
    pq.write_table(records_to_table(rows), tmp_path / "labels" / "part" / "s0.parquet")
    report = evaluate(load_predictions(str(tmp_path)), load_labels(labels))
    assert report.matched == 200
    # Measured: 0.985 (97/100 faces found, no non-face taken for a face).
    assert report.faces.presence_accuracy >= 0.98


def test_user_errors_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    assert _run_cli(["eval", str(tmp_path), "--labels", str(tmp_path / "missing.jsonl")], monkeypatch) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _run_cli(["eval", str(tmp_path), "--labels", str(DEVSET_LABELS)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no label rows" in err
