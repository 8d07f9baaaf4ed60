"""Whisper's tokenizer and feature-extractor files, repaired from a CTranslate2 model's tokenizer.

Both transformers' ``WhisperProcessor`` and mlx-audio (which wraps that processor) read these.
The ``tokenizer.json`` Systran ships beside CTranslate2 Whisper models is older than today's
Whisper tokenizers in two ways that break them, so it is repaired here, as JSON (no
``tokenizers`` package on the coordinator side):

* ``<|nospeech|>`` is still spelled ``<|nocaptions|>``. mlx-audio looks special tokens up by name
  and silently gets ``<|endoftext|>``'s id for a name it does not know: the no-speech probability
  is then read off the wrong token and whole windows are dropped or garbled.
* The 1501 timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` are missing. mlx-audio finds the first
  one by name (its ``timestamp_begin``): without it every token looks like a timestamp and the
  transcript is garbage that takes minutes. They are added as plain (not special) tokens, as in
  OpenAI's own Hugging Face repos, so that the special-token list still ends with
  ``<|notimestamps|>``: transformers' Whisper tokenizer takes "last special id + 1" as the first
  timestamp id.

Also written: ``vocab.json`` + ``merges.txt`` (the slow tokenizer's files), ``added_tokens.json``,
``special_tokens_map.json``, ``tokenizer_config.json`` and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.models.ct2_format import REBUILD_FIX, unavailable

LEGACY_NO_SPEECH = "<|nocaptions|>"
NO_SPEECH = "<|nospeech|>"
NO_TIMESTAMPS = "<|notimestamps|>"
END_OF_TEXT = "<|endoftext|>"
#: 0.00 s to 30.00 s in Whisper's 20 ms steps.
TIMESTAMP_COUNT = 1501
TIMESTAMP_STEP_S = 0.02
#: Whisper's front end: 16 kHz audio, 25 ms windows every 10 ms, 30 s per window.
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH_S = 30
#: transformers' WhisperTokenizer default.
MODEL_MAX_LENGTH = 1024


def timestamp_tokens() -> list[str]:
    return [f"<|{i * TIMESTAMP_STEP_S:.2f}|>" for i in range(TIMESTAMP_COUNT)]


def _added_token(token_id: int, content: str, special: bool) -> dict[str, Any]:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def repaired_tokenizer(source: Path, n_vocab: int) -> dict[str, Any]:
    """``source`` (a tokenizer.json) with ``<|nospeech|>`` renamed and timestamp tokens added."""
    try:
        tokenizer = json.loads(source.read_text(encoding="utf-8"))
        added = tokenizer["added_tokens"]
        vocab = tokenizer["model"]["vocab"]
    except FileNotFoundError:
        raise unavailable(source, "is missing (the model's tokenizer)", REBUILD_FIX) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise unavailable(
            source, f"is not a tokenizers tokenizer.json ({exc!r})", REBUILD_FIX
        ) from None
    for token in added:
        if token["content"] == LEGACY_NO_SPEECH:
            token["content"] = NO_SPEECH
    if not added or added[-1]["content"] != NO_TIMESTAMPS:
        raise unavailable(
            source, f"does not end its special tokens with {NO_TIMESTAMPS}", REBUILD_FIX
        )
    next_id = added[-1]["id"] + 1
    if next_id + TIMESTAMP_COUNT != n_vocab or max(vocab.values()) >= next_id:
        raise unavailable(
            source,
            f"names tokens up to id {next_id - 1}; with {TIMESTAMP_COUNT} timestamps that does "
            f"not fill the model's {n_vocab}",
            "use the tokenizer.json that came with the model",
        )
    existing = {token["content"] for token in added}
    added.extend(
        _added_token(next_id + i, content, special=False)
        for i, content in enumerate(timestamp_tokens())
        if content not in existing
    )
    return tokenizer


def token_id(tokenizer: dict[str, Any], content: str) -> int:
    """The id of an added (special or timestamp) token, by name."""
    for token in tokenizer["added_tokens"]:
        if token["content"] == content:
            return int(token["id"])
    raise KeyError(content)


def write_tokenizer_files(target: Path, tokenizer: dict[str, Any]) -> None:
    """Every tokenizer file transformers 4.57 and 5.x need for ``WhisperProcessor``."""
    added = tokenizer["added_tokens"]
    specials = [token["content"] for token in added if token["special"]]
    write_json(target / "tokenizer.json", tokenizer)
    write_json(target / "vocab.json", tokenizer["model"]["vocab"])
    merges = tokenizer["model"]["merges"]
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (target / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    write_json(target / "added_tokens.json", {t["content"]: t["id"] for t in added})
    special_map = {
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "additional_special_tokens": specials,  # in id order: ends with <|notimestamps|>
    }
    write_json(target / "special_tokens_map.json", special_map)
    write_json(
        target / "tokenizer_config.json",
        {
            **special_map,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added
            },
            "clean_up_tokenization_spaces": True,
            "errors": "replace",
            "model_max_length": MODEL_MAX_LENGTH,
            "processor_class": "WhisperProcessor",
            "tokenizer_class": "WhisperTokenizer",
        },
    )


def write_preprocessor_config(target: Path, n_mels: int) -> None:
    """``WhisperFeatureExtractor``'s settings: Whisper's fixed log-mel front end."""
    samples = CHUNK_LENGTH_S * SAMPLE_RATE
    write_json(
        target / "preprocessor_config.json",
        {
            "chunk_length": CHUNK_LENGTH_S,
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": n_mels,
            "hop_length": HOP_LENGTH,
            "n_fft": N_FFT,
            "n_samples": samples,
            "nb_max_frames": samples // HOP_LENGTH,
            "padding_side": "right",
            "padding_value": 0.0,
            "processor_class": "WhisperProcessor",
            "return_attention_mask": False,
            "sampling_rate": SAMPLE_RATE,
        },
    )


def write_json(path: Path, data: object) -> None:
    """Pretty JSON, as hub repos hold it (diffable when someone compares a conversion)."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
