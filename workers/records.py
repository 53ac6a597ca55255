"""The versioned record of one labeled image: pydantic model and pyarrow schema.

`LabeledImage` is the single definition; `ARROW_SCHEMA` is derived from it, so
the Parquet files, the OpenSearch mapping and the Python objects always agree.
SCHEMA_VERSION is derived too: a hash of the Arrow schema and of every enumerated
value, so it changes exactly when a field, its type or its allowed values do.
ErrorKind lists the error kinds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import types
from enum import Enum
from typing import Any, Literal, Optional, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from humantag.workers.attributes import Person, Quality, Scene

Status = Literal["ok", "error"]
# Which detector gave the person gate its strongest evidence (workers/labelers/gate.py).
GateDetector = Literal["face", "body"]

class ErrorKind(str, Enum):
    """Why a row has status=error: the one catalogue of error kinds, and whether a rerun may fix them.

    Labelers may record kinds of their own (error_kind is a string column); a kind
    not listed here is not retried.
    """

    MISSING = "missing"  # object vanished between listing and reading
    READ_ERROR = "read_error"  # storage refused or timed out
    READ_TIMEOUT = "read_timeout"  # the read outlasted StorageOptions.read_timeout_s (a hung mount, say)
    FIFO = "fifo"  # the name is a named pipe, not a file: reading it would block forever
    SOCKET = "socket"  # the name is a Unix socket
    DEVICE = "device"  # the name is a character or block device
    SYMLINK_LOOP = "symlink_loop"  # the symlink resolves to itself (ELOOP)
    DANGLING_SYMLINK = "dangling_symlink"  # the symlink's target does not exist
    TOO_LARGE = "too_large"  # more bytes than DecodeOptions.max_bytes
    EMPTY_FILE = "empty_file"
    NOT_AN_IMAGE = "not_an_image"  # bytes are not a known image format
    TRUNCATED = "truncated"  # a known format, cut short
    DECOMPRESSION_BOMB = "decompression_bomb"  # more pixels than max_pixels
    DECODE_ERROR = "decode_error"  # anything else the decoder raised
    UNSUPPORTED_GEOMETRY = "unsupported_geometry"  # so elongated that no labeler input size keeps both sides
    LABEL_ERROR = "label_error"  # the labeler failed on this image
    PREPROCESS_ERROR = "preprocess_error"  # the model's image processor refused the pixels
    GENERATION_ERROR = "generation_error"  # the model failed while generating (e.g. out of GPU memory)
    INVALID_OUTPUT = "invalid_output"  # the model's output did not fit the schema

    @property
    def retryable(self) -> bool:
        """A later run may succeed where this one failed (infrastructure, not the image)."""
        return self in RETRYABLE_ERROR_KINDS


# Incremental runs and backfills label rows with these kinds again.
RETRYABLE_ERROR_KINDS: frozenset[ErrorKind] = frozenset(
    {ErrorKind.MISSING, ErrorKind.READ_ERROR, ErrorKind.READ_TIMEOUT, ErrorKind.LABEL_ERROR, ErrorKind.GENERATION_ERROR}
)


class LabeledImage(BaseModel):
    """One row of DEST/labels: what we know about one source object."""

    model_config = ConfigDict(extra="forbid")

    uri: str
    etag: Optional[str] = None
    mtime: Optional[dt.datetime] = None
    size_bytes: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None
    mode: Optional[str] = None
    phash: Optional[str] = None

    status: Status
    error_kind: Optional[str] = None
    error_message: Optional[str] = None

    labeler: str
    labeler_version: str
    prompt_version: Optional[str] = None
    schema_version: str = Field(default_factory=lambda: SCHEMA_VERSION)  # derived below, from this model
    run_id: str
    shard_id: str
    labeled_at: dt.datetime

    # Set when the source object was deleted after labeling (incremental runs).
    deleted_at: Optional[dt.datetime] = None

    read_ms: Optional[float] = None
    decode_ms: Optional[float] = None
    label_ms: Optional[float] = None

    gated: Optional[bool] = None
    # Why the gate passed or skipped the image: its strongest person evidence and whose it was.
    gate_score: Optional[float] = None
    gate_detector: Optional[GateDetector] = None
    caption: Optional[str] = None
    people_count: Optional[int] = None
    faces_visible: Optional[int] = None
    persons: Optional[list[Person]] = None
    scene: Optional[Scene] = None
    quality: Optional[Quality] = None


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        return _arrow_type(inner[0])
    if origin is Literal:
        return pa.string()
    if origin is list:
        return pa.list_(_arrow_type(get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(arrow_fields(annotation))
    mapping: dict[Any, pa.DataType] = {
        str: pa.string(),
        int: pa.int64(),
        float: pa.float64(),
        bool: pa.bool_(),
        dt.datetime: pa.timestamp("us", tz="UTC"),
    }
    if annotation in mapping:
        return mapping[annotation]
    raise TypeError(f"no arrow type for {annotation!r}")


def arrow_fields(model: type[BaseModel]) -> list[pa.Field]:
    return [
        pa.field(name, _arrow_type(field.annotation), nullable=not field.is_required())
        for name, field in model.model_fields.items()
    ]


def _enum_values(annotation: Any, path: str, out: dict[str, list[str]]) -> None:
    """Every Literal's allowed values, by field path (they are strings in Arrow, but part of the schema)."""
    origin = get_origin(annotation)
    if origin is Literal:
        out[path] = [str(v) for v in get_args(annotation)]
    elif origin in (Union, types.UnionType, list):
        for arg in get_args(annotation):
            _enum_values(arg, path, out)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            _enum_values(field.annotation, f"{path}.{name}" if path else name, out)


def schema_fingerprint(model: type[BaseModel]) -> str:
    """A short hash of `model`'s Arrow schema (names, types, nullability) and enumerated values."""
    enums: dict[str, list[str]] = {}
    _enum_values(model, "", enums)
    arrow = pa.schema(arrow_fields(model)).to_string(show_schema_metadata=False, show_field_metadata=False)
    return hashlib.sha256(json.dumps([arrow, enums], sort_keys=True).encode()).hexdigest()[:12]


SCHEMA_VERSION: str = schema_fingerprint(LabeledImage)

ARROW_SCHEMA: pa.Schema = pa.schema(
    arrow_fields(LabeledImage), metadata={b"humantag.schema_version": SCHEMA_VERSION.encode()}
)


def records_to_table(records: list[LabeledImage]) -> pa.Table:
    rows = [r.model_dump(mode="python") for r in records]
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)


def table_to_records(table: pa.Table) -> list[LabeledImage]:
    return [LabeledImage.model_validate(row) for row in table.to_pylist()]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
