"""Build the output row of one image from its decode result and its labels."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from humantag.workers.images import DecodedImage
from humantag.workers.labelers.base import LabelOutput
from humantag.workers.records import LabeledImage, utcnow


@dataclass(frozen=True)
class RowContext:
    run_id: str
    shard_id: str
    labeler: str
    labeler_version: str


def _mtime(value: float | None) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)


def assemble_row(image: DecodedImage, output: LabelOutput | None, ctx: RowContext) -> LabeledImage:
    """`output` is None when decoding already failed (the labeler never saw the image)."""
    error_kind = image.error_kind or (output.error_kind if output else None)
    error_message = image.error_message or (output.error_message if output else None)
    if error_kind is None and output is None:
        error_kind, error_message = "label_error", "the labeler returned no result for this image"
    facts = output.facts if output else {}
    fields = {}
    if output is not None and error_kind is None:
        fields = {
            "gated": output.gated,
            "gate_score": output.gate_score,
            "gate_detector": output.gate_detector,
            "caption": output.caption,
            "people_count": output.people_count,
            "faces_visible": output.faces_visible,
            "persons": output.persons,
            "scene": output.scene,
            "quality": output.quality,
        }
    return LabeledImage(
        uri=image.uri,
        etag=image.etag,
        mtime=_mtime(image.mtime),
        size_bytes=image.size_bytes,
        width=image.width,
        height=image.height,
        format=facts.get("format", image.format),
        mode=facts.get("mode", image.mode),
        phash=facts.get("phash"),
        status="error" if error_kind else "ok",
        error_kind=error_kind,
        error_message=error_message,
        labeler=(output.labeler if output and output.labeler else ctx.labeler),
        labeler_version=(output.labeler_version if output and output.labeler_version else ctx.labeler_version),
        prompt_version=output.prompt_version if output else None,
        run_id=ctx.run_id,
        shard_id=ctx.shard_id,
        labeled_at=utcnow(),
        read_ms=image.read_ms,
        decode_ms=image.decode_ms,
        label_ms=output.label_ms if output else None,
        **fields,
    )
