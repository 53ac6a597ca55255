"""Score a labeled output against a labels file (format: docs/evaluation.md).

Predictions are the Parquet rows under PRED_DIR/labels/; a row and a label
meet by the image's file name (the last part of the row's uri), so the same
labels serve a local run and one over object storage. Metrics are computed
over the images present in both; a label left null is not scored.

- people count: exact and within +-1;
- faces: a predicted face box matches a labeled face when it contains the
  labeled centre (each box and each centre match at most once), giving
  precision and recall over images whose labels list `face_centers`; boxes on
  `small_face_centers` (faces labeled but too small to score) count neither
  way; plus image-level face/no-face accuracy from `faces_visible`;
- gate: of the images labeled with people, the share that passed (a gate row
  with `gated=false`; a row of a labeler without a gate passes when it found
  someone), and of the images labeled with nobody, the share held back;
- attributes (booleans and enums, image-level facts about the main person):
  compared with the largest predicted person; `accuracy` is over the images
  where the labeler answered, `coverage` is answered / labeled (a labeler
  that says "unknown" is not wrong, but it did not help either).
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow.parquet as pq
from pydantic import BaseModel

from humantag.workers.storage import StorageOptions, filesystem

log = logging.getLogger(__name__)

# label key -> how to read the prediction from the main person / the row.
ATTRIBUTES: dict[str, Callable[[dict[str, Any], Optional[dict[str, Any]]], Any]] = {
    "smiling": lambda row, person: person.get("smiling") if person else None,
    "eyewear": lambda row, person: person.get("eyewear") if person else None,
    "headwear": lambda row, person: person.get("headwear") if person else None,
    "upper_clothing_color": lambda row, person: person.get("upper_clothing_color") if person else None,
    "age_group": lambda row, person: person.get("age_group") if person else None,
    # The devset's `setting` is indoor/outdoor: the schema's scene.environment.
    "setting": lambda row, person: (row.get("scene") or {}).get("environment"),
}


class CountMetrics(BaseModel):
    images: int = 0
    exact: Optional[float] = None
    within_one: Optional[float] = None
    mean_abs_error: Optional[float] = None


class FaceMetrics(BaseModel):
    images: int = 0
    labeled_faces: int = 0
    predicted_faces: int = 0
    matched: int = 0
    precision: Optional[float] = None
    recall: Optional[float] = None
    presence_images: int = 0
    presence_accuracy: Optional[float] = None


class GateMetrics(BaseModel):
    people_images: int = 0
    passed: int = 0
    recall: Optional[float] = None
    empty_images: int = 0
    held_back: int = 0
    held_back_share: Optional[float] = None


class AttributeMetrics(BaseModel):
    labeled: int = 0
    answered: int = 0
    correct: int = 0
    accuracy: Optional[float] = None
    coverage: Optional[float] = None


class EvalReport(BaseModel):
    labels: int
    predictions: int
    matched: int
    error_rows: int
    unmatched_labels: list[str]
    people_count: CountMetrics
    faces: FaceMetrics
    gate: GateMetrics
    attributes: dict[str, AttributeMetrics]


def load_labels(path: str | Path) -> dict[str, dict[str, Any]]:
    labels: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "image" not in record:
            raise ValueError(f"{path}:{number}: a label needs an 'image' file name")
        labels[posixpath.basename(record["image"])] = record
    return labels


def load_predictions(pred_dir: str, storage: StorageOptions | None = None) -> dict[str, dict[str, Any]]:
    """The live rows (indexers.ledger) of PRED_DIR/labels/**/*.parquet by image file name."""
    from humantag.indexers.ledger import live_rows

    fs, root = filesystem(pred_dir, storage)
    files = sorted(fs.glob(posixpath.join(root, "labels", "**", "*.parquet")))
    every: list[dict[str, Any]] = []
    for file in files:
        with fs.open(file, "rb") as handle:
            every.extend(pq.read_table(handle).to_pylist())
    rows: dict[str, dict[str, Any]] = {}
    for uri, row in sorted(live_rows(every).items()):
        name = posixpath.basename(uri.rstrip("/"))
        if name in rows:
            log.warning("two images named %s; using %s", name, uri)
        rows[name] = row
    return rows


def _ratio(num: float, den: int) -> Optional[float]:
    return round(num / den, 4) if den else None


def _main_person(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The largest person (by face box, else person box): the one image-level labels describe."""

    def area(person: dict[str, Any]) -> int:
        box = person.get("face_box") or person.get("person_box")
        return box["w"] * box["h"] if box else 0

    persons = row.get("persons") or []
    return max(persons, key=area) if persons else None


def _face_matches(boxes: list[dict[str, Any]], centers: list[list[float]]) -> int:
    """Greedy one-to-one matching of boxes to the labeled centres they contain (smallest boxes first)."""
    unmatched = list(range(len(centers)))
    matched = 0
    for box in sorted(boxes, key=lambda b: b["w"] * b["h"]):
        for j in unmatched:
            cx, cy = centers[j]
            if box["x"] <= cx <= box["x"] + box["w"] and box["y"] <= cy <= box["y"] + box["h"]:
                unmatched.remove(j)
                matched += 1
                break
    return matched


def passed_gate(row: dict[str, Any]) -> bool:
    """The image went on to be labeled as one with people (see the module doc)."""
    if row.get("gated") is not None:
        return not row["gated"]
    return (row.get("people_count") or 0) > 0


def evaluate(predictions: dict[str, dict[str, Any]], labels: dict[str, dict[str, Any]]) -> EvalReport:
    common = sorted(set(predictions) & set(labels))
    ok = [name for name in common if predictions[name].get("status") == "ok"]
    counts = CountMetrics()
    faces = FaceMetrics()
    gate = GateMetrics()
    attributes = {key: AttributeMetrics() for key in ATTRIBUTES}
    exact = within = abs_err = 0
    presence_right = 0
    for name in ok:
        row, label = predictions[name], labels[name]
        predicted_count = row.get("people_count")
        if label.get("people_count") is not None and predicted_count is not None:
            counts.images += 1
            diff = abs(int(predicted_count) - int(label["people_count"]))
            exact += diff == 0
            within += diff <= 1
            abs_err += diff
        if label.get("people_count") is not None:
            if int(label["people_count"]) > 0:
                gate.people_images += 1
                gate.passed += passed_gate(row)
            else:
                gate.empty_images += 1
                gate.held_back += not passed_gate(row)
        boxes = [p["face_box"] for p in row.get("persons") or [] if p.get("face_box")]
        if label.get("face_centers") is not None:
            small = label.get("small_face_centers") or []
            scored = [b for b in boxes if not _face_matches([b], small)] if small else boxes
            faces.images += 1
            faces.labeled_faces += len(label["face_centers"])
            faces.predicted_faces += len(scored)
            faces.matched += _face_matches(scored, label["face_centers"])
        if label.get("faces_visible") is not None:
            faces.presence_images += 1
            presence_right += (len(boxes) > 0) == (int(label["faces_visible"]) > 0)
        person = _main_person(row)
        for key, read in ATTRIBUTES.items():
            if label.get(key) is None:
                continue
            metric = attributes[key]
            metric.labeled += 1
            value = read(row, person)
            if value is not None:
                metric.answered += 1
                metric.correct += value == label[key]
    counts.exact = _ratio(exact, counts.images)
    counts.within_one = _ratio(within, counts.images)
    counts.mean_abs_error = _ratio(abs_err, counts.images)
    faces.precision = _ratio(faces.matched, faces.predicted_faces)
    faces.recall = _ratio(faces.matched, faces.labeled_faces)
    faces.presence_accuracy = _ratio(presence_right, faces.presence_images)
    gate.recall = _ratio(gate.passed, gate.people_images)
    gate.held_back_share = _ratio(gate.held_back, gate.empty_images)
    for metric in attributes.values():
        metric.accuracy = _ratio(metric.correct, metric.answered)
        metric.coverage = _ratio(metric.answered, metric.labeled)
    return EvalReport(
        labels=len(labels),
        predictions=len(predictions),
        matched=len(common),
        error_rows=len(common) - len(ok),
        unmatched_labels=sorted(set(labels) - set(predictions)),
        people_count=counts,
        faces=faces,
        gate=gate,
        attributes={k: v for k, v in attributes.items() if v.labeled},
    )
