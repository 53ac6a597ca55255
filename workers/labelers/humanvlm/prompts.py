"""Our prompts for HumanVLM, in the Llama-3 chat format it was trained with.

The checkpoint's shipped chat template carries an unrelated system prompt, so we
build the token string ourselves. One conversation per image: the image and the
caption request, the model's caption, then the attributes request as a second
user turn (see docs/humanvlm.md); without a caption the attributes request is the
first turn. `prompt_version` names the prompt set and a hash of everything that
shapes the model's input and output (texts, attribute schema, caption bound),
computed with a placeholder for the image token: it is known from the options
alone, before the tokenizer loads, and the checkpoint is in `labeler_version`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Optional

PROMPT_SET = "v2"  # v2: one conversation per image (v1: two independent prompts)

BEGIN = "<|begin_of_text|>"
EOT = "<|eot_id|>"
IMAGE_PLACEHOLDER = "<image>"  # the processor's image token in the version hash

SYSTEM = (
    "You are a careful visual annotator for a photo archive. Describe only what is visible. "
    "Never guess anyone's identity, name, race or ethnicity."
)

CAPTION_INSTRUCTION = (
    "Describe this image in detail for an archive search index. For each person: apparent age group, "
    "clothing (type and colour), hair, eyewear or headwear, facial expression, pose and what they are doing. "
    "Then describe the scene: indoor or outdoor, the setting, and notable objects. "
    "Write plain sentences, at most 120 words."
)

ATTRIBUTES_INSTRUCTION = (
    "Return the people in this image as JSON with exactly these keys, in this order. "
    "List the most prominent people first. Use null when something cannot be seen.\n{fields}"
)


def header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def chat(user_text: str, image_token: str) -> str:
    """One user turn with the image first, then the assistant header to generate after."""
    return (
        f"{BEGIN}{header('system')}{SYSTEM}{EOT}"
        f"{header('user')}{image_token}\n{user_text}{EOT}"
        f"{header('assistant')}"
    )


def next_turn(user_text: str) -> str:
    """Close the assistant's answer, ask again, open the next answer."""
    return f"{EOT}{header('user')}{user_text}{EOT}{header('assistant')}"


@dataclass(frozen=True)
class Prompts:
    first: str  # system, image, first request, assistant header
    follow_up: Optional[str]  # the attributes request after the caption; None: `first` asks for them
    version: str


def build_prompts(
    image_token: str, field_description: str, json_schema: dict[str, Any], caption_max_new_tokens: Optional[int]
) -> Prompts:
    """`caption_max_new_tokens` None: no caption, the attributes are the only turn."""
    attributes = ATTRIBUTES_INSTRUCTION.format(fields=field_description)

    def texts(token: str) -> tuple[str, Optional[str]]:
        if caption_max_new_tokens is None:
            return chat(attributes, token), None
        return chat(CAPTION_INSTRUCTION, token), next_turn(attributes)

    first, follow_up = texts(image_token)
    digest = hashlib.sha256(
        json.dumps([texts(IMAGE_PLACEHOLDER), json_schema, caption_max_new_tokens], sort_keys=True).encode()
    ).hexdigest()[:10]
    return Prompts(first=first, follow_up=follow_up, version=f"{PROMPT_SET}-{digest}")
