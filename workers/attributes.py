"""The human-attribute schema: one place, shared by every labeler.

HumanVLM fills it by constrained decoding, the CPU labeler fills the part its
detectors can see; a field a labeler can't determine stays None (never a guess).
Every enumerated attribute of a person has a matching confidence in [0, 1] in
`Person.confidence`. The record schema (`workers.records`) and the OpenSearch
mapping are derived from these models, so a new attribute is added here only.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model

AgeGroup = Literal["child", "teen", "adult", "senior"]
Expression = Literal["neutral", "smiling", "laughing", "serious", "sad", "surprised", "angry"]
HairColor = Literal["black", "brown", "blond", "red", "gray", "white", "dyed", "none"]
HairLength = Literal["bald", "short", "medium", "long"]
FacialHair = Literal["none", "stubble", "mustache", "beard"]
Eyewear = Literal["none", "glasses", "sunglasses"]
Headwear = Literal["none", "hat", "cap", "helmet", "hood", "headscarf", "other"]
FaceCovering = Literal["none", "mask", "scarf", "veil", "other"]
UpperClothing = Literal[
    "t-shirt", "shirt", "blouse", "sweater", "hoodie", "jacket", "coat", "dress",
    "suit", "uniform", "tank-top", "swimwear", "none", "other",
]
LowerClothing = Literal["trousers", "jeans", "shorts", "skirt", "dress", "swimwear", "none", "other"]
Color = Literal[
    "black", "white", "gray", "red", "orange", "yellow", "green", "blue",
    "purple", "pink", "brown", "beige", "multicolor",
]
Accessory = Literal[
    "bag", "backpack", "watch", "jewelry", "tie", "scarf", "gloves", "umbrella",
    "phone", "camera", "microphone", "other",
]
Pose = Literal["standing", "sitting", "lying", "walking", "running", "crouching", "other"]
# Sensitive: produced only when LabelerOptions.sensitive_attributes is on.
# Race and ethnicity are never part of this schema.
GenderPresentation = Literal["feminine", "masculine", "androgynous"]

Environment = Literal["indoor", "outdoor"]
Setting = Literal[
    "home", "office", "street", "park", "beach", "mountain", "forest", "field",
    "water", "snow", "studio", "stage", "sports-venue", "restaurant", "shop",
    "vehicle", "event", "space", "other",
]

SENSITIVE_PERSON_FIELDS: tuple[str, ...] = ("gender_presentation",)


class Box(BaseModel):
    """Pixel box in the EXIF-rotated image, with the detector's score."""

    model_config = ConfigDict(extra="forbid")
    x: int
    y: int
    w: int
    h: int
    score: Optional[float] = None


class PersonAttributes(BaseModel):
    """What can be said of one person. All optional: unknown stays None."""

    model_config = ConfigDict(extra="forbid")
    age_group: Optional[AgeGroup] = None
    expression: Optional[Expression] = None
    smiling: Optional[bool] = None
    hair_color: Optional[HairColor] = None
    hair_length: Optional[HairLength] = None
    facial_hair: Optional[FacialHair] = None
    eyewear: Optional[Eyewear] = None
    headwear: Optional[Headwear] = None
    face_covering: Optional[FaceCovering] = None
    upper_clothing: Optional[UpperClothing] = None
    upper_clothing_color: Optional[Color] = None
    lower_clothing: Optional[LowerClothing] = None
    lower_clothing_color: Optional[Color] = None
    accessories: Optional[list[Accessory]] = None
    pose: Optional[Pose] = None
    action: Optional[str] = Field(default=None, max_length=80)
    face_visible: Optional[bool] = None
    gender_presentation: Optional[GenderPresentation] = None


def _is_enumerated(annotation: object) -> bool:
    """True for Optional[Literal[...]] / Optional[bool] / Optional[list[Literal]]."""
    for arg in get_args(annotation):
        if arg is bool or getattr(arg, "__origin__", None) is Literal:
            return True
        if getattr(arg, "__origin__", None) is list:
            return True
    return False


ENUMERATED_PERSON_FIELDS: tuple[str, ...] = tuple(
    name for name, field in PersonAttributes.model_fields.items() if _is_enumerated(field.annotation)
)

# One float per enumerated attribute, generated so the two can never drift apart.
PersonConfidence = create_model(  # type: ignore[call-overload]
    "PersonConfidence",
    __config__=ConfigDict(extra="forbid"),
    **{name: (Optional[float], Field(default=None, ge=0.0, le=1.0)) for name in ENUMERATED_PERSON_FIELDS},
)


class Person(PersonAttributes):
    """A person in the image: attributes, where they are, and how sure we are."""

    person_box: Optional[Box] = None
    face_box: Optional[Box] = None
    confidence: Optional[PersonConfidence] = None  # type: ignore[valid-type]


class Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")
    environment: Optional[Environment] = None
    setting: Optional[Setting] = None
    environment_confidence: Optional[float] = Field(default=None, ge=0.0, le=1.0)
    setting_confidence: Optional[float] = Field(default=None, ge=0.0, le=1.0)


class Quality(BaseModel):
    """Image-quality flags computed from pixels (CPU labeler)."""

    model_config = ConfigDict(extra="forbid")
    blurry: Optional[bool] = None
    underexposed: Optional[bool] = None
    overexposed: Optional[bool] = None
    sharpness: Optional[float] = None
    brightness: Optional[float] = None


def literal_values(annotation: object) -> list[str]:
    """The allowed values of an Optional[Literal] or Optional[list[Literal]] field."""
    for arg in get_args(annotation):
        if getattr(arg, "__origin__", None) is Literal:
            return list(get_args(arg))
        if getattr(arg, "__origin__", None) is list:
            return literal_values(Optional[get_args(arg)[0]])
    return []
