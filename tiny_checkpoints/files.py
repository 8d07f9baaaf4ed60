"""The parts every tiny test checkpoint is made of: seeded tensors, a byte-level tokenizer, JSON.

Shared by the recipes (:mod:`tiny_checkpoints.qwen3_asr`, :mod:`tiny_checkpoints.whisper`) that
:mod:`tiny_checkpoints` builds. Only numpy, safetensors and tokenizers are used (all
present in both host envs), so a build never imports torch or MLX and takes well under a second.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

#: Standard deviation of the random matrices (the usual transformer initializer range).
WEIGHT_STD = 0.02
#: One token per byte: any text encodes and decodes, no merges needed.
BYTE_VOCAB_SIZE = 256


def random_tensors(
    shapes: Iterable[tuple[str, tuple[int, ...]]], seed: int
) -> dict[str, np.ndarray]:
    """Tensors as a freshly initialised model has them: normal matrices, unit norms, zero biases.

    ``shapes`` must come in a fixed order: the same seed then gives the same bytes.
    """
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        if name.endswith(".bias"):
            value = np.zeros(shape, dtype=np.float32)
        elif len(shape) == 1:  # LayerNorm / RMSNorm scales
            value = np.ones(shape, dtype=np.float32)
        else:
            value = rng.normal(0.0, WEIGHT_STD, size=shape).astype(np.float32)
        tensors[name] = value
    return tensors


def save_tensors(path: Path, tensors: dict[str, np.ndarray], layout: str) -> None:
    """A safetensors file whose metadata names its layout (transformers refuses one without)."""
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": layout})


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-printable-character table that byte-level BPE vocabularies are spelled in."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def byte_vocab() -> dict[str, int]:
    """vocab.json of the byte tokens (ids 0-255); added tokens follow them in tokenizer.json."""
    table = _bytes_to_unicode()
    return {table[b]: b for b in range(BYTE_VOCAB_SIZE)}


def byte_level_tokenizer_json(
    special_tokens: Sequence[str],
    plain_tokens: Sequence[str] = (),
    split_pattern: str | None = None,
    normalize_nfc: bool = False,
) -> str:
    """tokenizer.json of a byte-level BPE tokenizer: byte ids first, then special, then plain tokens.

    ``split_pattern`` is the pre-tokenizer regex of the real tokenizer being imitated (the GPT-2
    default when None); ``plain_tokens`` are added but not special, so decoding keeps them.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tokenizer = Tokenizer(models.BPE(vocab=byte_vocab(), merges=[], fuse_unk=False))
    if normalize_nfc:
        tokenizer.normalizer = normalizers.NFC()
    if split_pattern is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in special_tokens]
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_tokens])
    for expected, token in enumerate((*special_tokens, *plain_tokens), start=BYTE_VOCAB_SIZE):
        if tokenizer.token_to_id(token) != expected:
            raise RuntimeError(
                f"tokenizer gave {token} id {tokenizer.token_to_id(token)}, expected {expected}"
            )
    return tokenizer.to_str(pretty=True) + "\n"


def added_tokens_decoder(
    special_tokens: Sequence[str], plain_tokens: Sequence[str] = ()
) -> dict[str, dict]:
    """tokenizer_config.json's ``added_tokens_decoder`` for the ids byte_level_tokenizer_json gives."""
    tokens = [(t, True) for t in special_tokens] + [(t, False) for t in plain_tokens]
    return {
        str(BYTE_VOCAB_SIZE + i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (token, special) in enumerate(tokens)
    }


def write_byte_level_vocab(target: Path) -> None:
    """vocab.json + merges.txt: what slow tokenizers and mlx-audio's loaders look for."""
    write_json(target / "vocab.json", byte_vocab())
    (target / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def padded_vocab_size(used: int, multiple: int = 8) -> int:
    """Vocabulary rows rounded up, as real checkpoints round theirs."""
    return -(-used // multiple) * multiple


def recipe(name: str, version: int, seed: int, sizes: object) -> dict:
    """What a build is made from; a directory built from another recipe is rebuilt."""
    import dataclasses

    return {
        "model": name,
        "recipe_version": version,
        "seed": seed,
        "sizes": dataclasses.asdict(sizes),
    }


def whisper_feature_extractor(n_mels: int, processor_class: str, **extra: object) -> dict:
    """preprocessor_config.json of a Whisper-style log-mel front end (both recipes use one)."""
    return {
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": n_mels,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": processor_class,
        "sampling_rate": 16000,
        **extra,
    }


def write_weights(path: Path, shapes: dict[str, tuple[int, ...]], seed: int, layout: str) -> None:
    """Random weights of the given shapes, saved in the layout its loader expects."""
    tensors = random_tensors(shapes, seed)
    logging.getLogger(__name__).info(
        "writing %d tensors (%d parameters)", len(tensors), sum(t.size for t in tensors.values())
    )
    save_tensors(path, tensors, layout=layout)
