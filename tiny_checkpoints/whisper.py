"""Recipe of a tiny English-only Whisper in mlx-community's layout, for mlx-audio's Whisper.

Built by :mod:`tiny_checkpoints` (``--model whisper``); only the MLX host can load it
(qwen-asr serves Qwen3-ASR alone). It lives beside the Qwen3-ASR recipe because both share the
tokenizer and build code and need nothing but numpy, safetensors and tokenizers.

What mlx-audio 0.3.1 needs from a Whisper directory, and how this one stays tiny:

* ``config.json`` in MLX form (``n_mels``, ``n_audio_ctx``, ... ``model_type: whisper``) and
  ``weights.safetensors`` in MLX layout (conv kernels as out x kernel x in).
* ``n_mels`` 80 and ``n_audio_ctx`` 1500: the front end always pads audio to 30 s of 80-bin mel
  frames, which the encoder's stride-2 conv turns into 1500 positions.
* A Hugging Face ``WhisperProcessor`` (tokenizer files + ``preprocessor_config.json``): without it
  every transcript fails with "Processor not found".
* Whisper's special tokens by name. Timestamps are recognised by id (at and above ``<|0.00|>``),
  so only ``<|0.00|>`` is in the tokenizer while the model keeps the 1501 timestamp rows: loading
  a tokenizer with 1501 added tokens costs seconds, and decoding drops timestamps anyway.
* Fewer than 51865 rows makes it an English-only model: no language detection, ``en`` always.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

from tiny_checkpoints.files import (
    BYTE_VOCAB_SIZE,
    added_tokens_decoder,
    byte_level_tokenizer_json,
    recipe,
    whisper_feature_extractor,
    write_byte_level_vocab,
    write_json,
    write_weights,
)

logger = logging.getLogger(__name__)

NAME = "whisper"
RECIPE_VERSION = 1

#: Whisper's special tokens (English-only set), in id order after the byte tokens.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
    "<|0.00|>",
)
#: 0.00 s to 30.00 s in steps of 0.02 s.
TIMESTAMP_TOKENS = 1501


@dataclasses.dataclass(frozen=True)
class TinySizes:
    state: int = 32
    heads: int = 2
    layers: int = 1
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_text_ctx: int = 448

    @property
    def n_vocab(self) -> int:
        # The first timestamp token is the last special token; the other 1500 exist only as rows.
        return BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS) - 1 + TIMESTAMP_TOKENS


SIZES = TinySizes()


def model_config(sizes: TinySizes) -> dict:
    return {
        "model_type": "whisper",
        "n_mels": sizes.n_mels,
        "n_audio_ctx": sizes.n_audio_ctx,
        "n_audio_state": sizes.state,
        "n_audio_head": sizes.heads,
        "n_audio_layer": sizes.layers,
        "n_vocab": sizes.n_vocab,
        "n_text_ctx": sizes.n_text_ctx,
        "n_text_state": sizes.state,
        "n_text_head": sizes.heads,
        "n_text_layer": sizes.layers,
    }


def _attention(prefix: str, d: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    for proj in ("query", "key", "value", "out"):
        yield f"{prefix}.{proj}.weight", (d, d)
        if proj != "key":  # Whisper's key projection has no bias
            yield f"{prefix}.{proj}.bias", (d,)


def _block(prefix: str, d: int, cross_attention: bool) -> Iterator[tuple[str, tuple[int, ...]]]:
    norms = ["attn_ln", "mlp_ln"] + (["cross_attn_ln"] if cross_attention else [])
    yield from _attention(f"{prefix}.attn", d)
    if cross_attention:
        yield from _attention(f"{prefix}.cross_attn", d)
    yield f"{prefix}.mlp1.weight", (4 * d, d)
    yield f"{prefix}.mlp1.bias", (4 * d,)
    yield f"{prefix}.mlp2.weight", (d, 4 * d)
    yield f"{prefix}.mlp2.bias", (d,)
    for norm in norms:
        yield f"{prefix}.{norm}.weight", (d,)
        yield f"{prefix}.{norm}.bias", (d,)


def parameter_shapes(sizes: TinySizes) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every parameter of mlx-audio's Whisper Model, in MLX layout, fixed order."""
    d = sizes.state
    yield "encoder.conv1.weight", (d, 3, sizes.n_mels)
    yield "encoder.conv1.bias", (d,)
    yield "encoder.conv2.weight", (d, 3, d)
    yield "encoder.conv2.bias", (d,)
    for i in range(sizes.layers):
        yield from _block(f"encoder.blocks.{i}", d, cross_attention=False)
    yield "encoder.ln_post.weight", (d,)
    yield "encoder.ln_post.bias", (d,)
    yield "decoder.token_embedding.weight", (sizes.n_vocab, d)
    yield "decoder.positional_embedding", (sizes.n_text_ctx, d)
    for i in range(sizes.layers):
        yield from _block(f"decoder.blocks.{i}", d, cross_attention=True)
    yield "decoder.ln.weight", (d,)
    yield "decoder.ln.bias", (d,)


def tokenizer_config() -> dict:
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(SPECIAL_TOKENS),
        "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 1024,
        "pad_token": "<|endoftext|>",
        "processor_class": "WhisperProcessor",
        "tokenizer_class": "WhisperTokenizer",
        "unk_token": "<|endoftext|>",
    }


def preprocessor_config(sizes: TinySizes) -> dict:
    return whisper_feature_extractor(sizes.n_mels, "WhisperProcessor", return_attention_mask=False)


def describe(seed: int) -> dict:
    return recipe(NAME, RECIPE_VERSION, seed, SIZES)


def write(target: Path, seed: int) -> None:
    """Write every file of the checkpoint into ``target`` (an empty directory)."""
    write_weights(target / "weights.safetensors", parameter_shapes(SIZES), seed, layout="mlx")
    write_json(target / "config.json", model_config(SIZES))
    logger.info(
        "writing tokenizer (%d of %d tokens named)",
        BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS),
        SIZES.n_vocab,
    )
    write_byte_level_vocab(target)
    (target / "tokenizer.json").write_text(
        byte_level_tokenizer_json(SPECIAL_TOKENS), encoding="utf-8"
    )
    write_json(target / "tokenizer_config.json", tokenizer_config())
    write_json(target / "preprocessor_config.json", preprocessor_config(SIZES))
