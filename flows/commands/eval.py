"""`humantag eval PRED_DIR --labels LABELS.jsonl [--json OUT]`: score an output against labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from humantag.flows.errors import UserError
from humantag.flows.evaluation import EvalReport, evaluate, load_labels, load_predictions


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(report: EvalReport) -> Table:
    table = Table(title=f"{report.matched} images in both ({report.error_rows} error rows, {len(report.unmatched_labels)} labels without a row)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("images", justify="right")
    pc, faces, gate = report.people_count, report.faces, report.gate
    table.add_row("people count exact", _fmt(pc.exact), str(pc.images))
    table.add_row("people count within ±1", _fmt(pc.within_one), str(pc.images))
    table.add_row("people count mean abs error", _fmt(pc.mean_abs_error), str(pc.images))
    table.add_row(f"face precision ({faces.matched}/{faces.predicted_faces} boxes)", _fmt(faces.precision), str(faces.images))
    table.add_row(f"face recall ({faces.matched}/{faces.labeled_faces} faces)", _fmt(faces.recall), str(faces.images))
    table.add_row("face / no face accuracy", _fmt(faces.presence_accuracy), str(faces.presence_images))
    table.add_row(f"gate recall ({gate.passed}/{gate.people_images} with people passed)", _fmt(gate.recall), str(gate.people_images))
    table.add_row(f"no-person held back ({gate.held_back}/{gate.empty_images})", _fmt(gate.held_back_share), str(gate.empty_images))
    for name, metric in report.attributes.items():
        table.add_row(
            f"{name} accuracy ({metric.correct}/{metric.answered} answered)", _fmt(metric.accuracy), str(metric.labeled)
        )
        table.add_row(f"{name} coverage", _fmt(metric.coverage), str(metric.labeled))
    return table


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        pred_dir: str = typer.Argument(..., help="A humantag output (DEST): local path or s3://bucket/prefix."),
        labels: Path = typer.Option(..., "--labels", help="Labels, one JSON object per line (see docs/evaluation.md)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON here."),
    ) -> None:
        """Per-attribute metrics of an output against a labels file."""
        if not labels.is_file():
            raise UserError(f"labels file {labels} does not exist")
        try:
            truth = load_labels(labels)
        except (ValueError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read labels {labels}: {exc}") from None
        predictions = load_predictions(pred_dir)
        if not predictions:
            raise UserError(f"no label rows under {pred_dir}/labels/ (is this a humantag output?)")
        report = evaluate(predictions, truth)
        if report.matched == 0:
            raise UserError(f"none of the {len(truth)} labeled images has a row under {pred_dir}/labels/")
        Console().print(render(report))
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report.model_dump(mode="json"), indent=1) + "\n")
