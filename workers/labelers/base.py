"""The labeler interface every model plugs into.

A labeler is constructed cheaply anywhere (driver, tests), then `setup()` is
called once inside the Ray actor that holds it: that is where weights load and
where the device is chosen. `label()` receives images that are already read and
decoded (no I/O in the model) and returns one `LabelOutput` per image, in order.
A failure on one image is that image's `LabelOutput(error_kind=...)`, never an
exception that loses the batch.

Two things are known from the options alone, cheaply, wherever the labeler is
constructed (the driver plans with them before any actor starts):
`identity()` (labeler, prompt and schema version its rows will carry; no
weights loaded or copied) and `throughput()` (its expected images/s, with where
that figure comes from).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field

from humantag.workers.attributes import Person, Quality, Scene
from humantag.workers.images import DecodedImage
from humantag.workers.records import SCHEMA_VERSION


class LabelerOptions(BaseModel):
    """Settings a labeler reads; unknown keys go to `extra` for labeler-specific knobs."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(default=8, ge=1, description="Images per labeler call.", json_schema_extra={"short": "-b"})
    sensitive_attributes: bool = Field(
        default=False, description="Also produce perceived gender presentation (never race or ethnicity); "
                                   "recorded in the run summary.")
    model: Optional[str] = Field(default=None, description="Model for model-based labelers: hub id, local folder or s3:// URL.")
    device: Optional[str] = Field(default=None, description="Torch device of the labeler. Default: chosen where the replica runs.")
    extra: dict[str, Any] = Field(
        default={}, description="Extra labeler setting KEY=VALUE (repeatable), e.g. -L max_new_tokens=256.",
        json_schema_extra={"flag": "--labeler-option", "short": "-L"})


@dataclass
class LabelOutput:
    """The label fields for one image; None means 'not determined'."""

    caption: Optional[str] = None
    people_count: Optional[int] = None
    faces_visible: Optional[int] = None
    persons: Optional[list[Person]] = None
    scene: Optional[Scene] = None
    quality: Optional[Quality] = None
    gated: Optional[bool] = None
    gate_score: Optional[float] = None  # the gate's evidence (LabeledImage.gate_score / gate_detector)
    gate_detector: Optional[str] = None
    prompt_version: Optional[str] = None
    labeler: Optional[str] = None  # set when a composite labeler delegated (gate -> humanvlm)
    labeler_version: Optional[str] = None
    label_ms: Optional[float] = None
    error_kind: Optional[str] = None
    error_message: Optional[str] = None
    facts: dict[str, Any] = field(default_factory=dict)  # format/mode/phash overrides

    @classmethod
    def failed(cls, kind: str, message: str) -> "LabelOutput":
        return cls(error_kind=kind, error_message=message[:2000])


@dataclass(frozen=True)
class LabelerIdentity:
    """The versions a row labeled by this labeler carries; a row with other versions is stale."""

    version: str  # labeler_version: weights + code + settings that change the output
    prompt_version: Optional[str] = None  # prompts + output schema, for prompted models
    schema_version: str = SCHEMA_VERSION  # the record schema (workers.records)


@dataclass(frozen=True)
class Throughput:
    """Expected labeling rate of one replica, and where the figure comes from."""

    images_per_second: float
    accelerator: str  # "GPU" or "CPU core": what one replica occupies
    source: str  # e.g. "bench/cpu_labeler.py, docs/performance.md"


@dataclass(frozen=True)
class Placement:
    """Ray resources one replica asks for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


class Labeler(ABC):
    name: ClassVar[str]
    # Decoders shrink images whose longer side exceeds this before shipping them
    # to the actor (None: full size). Width/height in the record stay the original.
    decode_max_side: ClassVar[Optional[int]] = None

    def __init__(self, options: LabelerOptions | None = None) -> None:
        self.options = options or LabelerOptions()

    @abstractmethod
    def identity(self) -> LabelerIdentity:
        """Versions from the options alone: no weights loaded or copied, nothing downloaded.

        Called on the driver to plan incremental runs and in the actor to stamp rows, so
        both must agree. Implementations memoise anything costlier than string formatting.
        """

    @property
    def version(self) -> str:
        """Identifies weights + code: recorded in every row as labeler_version."""
        return self.identity().version

    def current_identities(self) -> tuple[LabelerIdentity, ...]:
        """Every identity a current row may carry; a composite labeler (the gate) has several."""
        return (self.identity(),)

    def throughput(self) -> Optional[Throughput]:
        """Expected images/s of one replica (for `--dry-run` estimates) and its source; None: unknown."""
        return None

    def setup(self) -> None:
        """Load weights, pick the device. Called once per actor."""

    @abstractmethod
    def label(self, images: list[DecodedImage]) -> list[LabelOutput]:
        """One LabelOutput per input image, in order."""

    def label_with_persons(self, images: list[DecodedImage], detected: list[list[Person]]) -> list[LabelOutput]:
        """Label images in which a detector (the person gate) already found these persons.

        `detected[i]` lists image i's persons left to right, with face/person
        boxes in source pixels. A labeler that can use them (e.g. to name
        the people in its prompt) overrides this; by default they are ignored
        and the gate attaches the boxes to the output afterwards.
        """
        return self.label(images)

    def default_placement(self) -> Placement:
        return Placement()

    def run_info(self) -> dict[str, Any]:
        """Settings worth recording in the run summary (e.g. sensitive attributes on/off)."""
        return {"sensitive_attributes": self.options.sensitive_attributes}
