"""Constrained decoding with xgrammar: the JSON schema becomes a grammar that masks logits.

The grammar is compiled once per actor against the model's tokenizer; each
generate() call gets a fresh HF logits processor (xgrammar's matchers are
stateful, one per sequence).
"""

from __future__ import annotations

import json
from typing import Any

import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor

from humantag.workers.labelers.humanvlm.model import LoadedModel
from humantag.workers.labelers.humanvlm.schema import SEPARATORS


class JsonConstraint:
    def __init__(self, loaded: LoadedModel, json_schema: dict[str, Any]) -> None:
        info = xgr.TokenizerInfo.from_huggingface(
            loaded.tokenizer, vocab_size=loaded.vocab_size, stop_token_ids=[loaded.stop_token_id]
        )
        compiler = xgr.GrammarCompiler(info)
        self.grammar = compiler.compile_json_schema(
            json.dumps(json_schema), any_whitespace=False, separators=SEPARATORS, strict_mode=True
        )
        # The bytes of each token as the grammar matched them: maps tokens to JSON offsets.
        self.token_bytes: list[bytes] = list(info.decoded_vocab)

    def logits_processor(self) -> LogitsProcessor:
        return LogitsProcessor(self.grammar)
