"""Our prompts for HumanVLM, in the Llama-3 chat format it was trained with.

The checkpoint's shipped chat template carries an unrelated system prompt, so we
build the token string ourselves. `prompt_version` names the prompt set and a hash
of everything that shapes the model's input and output (texts + attribute schema),
so a row can always be traced to the exact prompt that produced it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

PROMPT_SET = "v1"

BEGIN = "<|begin_of_text|>"
EOT = "<|eot_id|>"

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


@dataclass(frozen=True)
class Prompts:
    caption: str
    attributes: str
    version: str


def build_prompts(image_token: str, field_description: str, json_schema: dict[str, Any]) -> Prompts:
    caption = chat(CAPTION_INSTRUCTION, image_token)
    attributes = chat(ATTRIBUTES_INSTRUCTION.format(fields=field_description), image_token)
    digest = hashlib.sha256(
        json.dumps([caption, attributes, json_schema], sort_keys=True).encode()
    ).hexdigest()[:10]
    return Prompts(caption=caption, attributes=attributes, version=f"{PROMPT_SET}-{digest}")
