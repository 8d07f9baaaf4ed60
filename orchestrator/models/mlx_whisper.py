"""Writes a Whisper checkpoint in mlx-audio 0.3.1's own Whisper layout (mlx-community's).

What ``mlx_audio.stt.utils.load_model`` needs (read in ``mlx_audio/stt/models/whisper/whisper.py``):
``config.json`` with OpenAI's dimension names and ``model_type: whisper``; ``*.safetensors``
under OpenAI/MLX names (``encoder.blocks.0.attn.query.weight``) with conv kernels as
out x kernel x in; and a Hugging Face ``WhisperProcessor`` beside them (tokenizer and
preprocessor files), without which every transcript fails with "Processor not found".

Left out on purpose: the encoder's positional table. mlx-audio recomputes Whisper's sinusoids and
keeps them out of its parameters, so a stored copy would be an unused extra tensor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from orchestrator.models.hf_whisper import uniform_dtype
from orchestrator.models.safetensors_file import write_safetensors
from orchestrator.models.whisper_ct2 import WhisperCheckpoint
from orchestrator.models.whisper_tokenizer import (
    write_json,
    write_preprocessor_config,
    write_tokenizer_files,
)

#: Hugging Face name part -> OpenAI/MLX name part, most specific first.
_RENAMES = (
    ("model.decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("model.decoder.embed_tokens.", "decoder.token_embedding."),
    ("model.encoder.layer_norm.", "encoder.ln_post."),
    ("model.decoder.layer_norm.", "decoder.ln."),
    ("model.encoder.layers.", "encoder.blocks."),
    ("model.decoder.layers.", "decoder.blocks."),
    ("model.encoder.", "encoder."),
    (".self_attn_layer_norm.", ".attn_ln."),
    (".encoder_attn_layer_norm.", ".cross_attn_ln."),
    (".final_layer_norm.", ".mlp_ln."),
    (".fc1.", ".mlp1."),
    (".fc2.", ".mlp2."),
    (".self_attn.", ".attn."),
    (".encoder_attn.", ".cross_attn."),
    (".q_proj.", ".query."),
    (".k_proj.", ".key."),
    (".v_proj.", ".value."),
    (".out_proj.", ".out."),
)
_SKIPPED = frozenset({"model.encoder.embed_positions.weight"})


def mlx_name(hf_name: str) -> str:
    for old, new in _RENAMES:
        hf_name = hf_name.replace(old, new)
    return hf_name


def mlx_tensors(checkpoint: WhisperCheckpoint) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under mlx-audio's names and layouts."""
    out = {}
    for name, value in uniform_dtype(checkpoint.tensors).items():
        if name in _SKIPPED:
            continue
        if name.endswith(("conv1.weight", "conv2.weight")):
            value = value.transpose(0, 2, 1)  # (out, in, kernel) -> MLX's (out, kernel, in)
        out[mlx_name(name)] = value
    return out


def write_mlx_whisper(target: Path, checkpoint: WhisperCheckpoint, tokenizer: dict) -> None:
    """Write every file of mlx-audio's Whisper layout into ``target`` (an empty folder)."""
    write_safetensors(target / "weights.safetensors", mlx_tensors(checkpoint))
    write_json(
        target / "config.json",
        {"model_type": "whisper", **dataclasses.asdict(checkpoint.dims)},
    )
    write_preprocessor_config(target, checkpoint.dims.n_mels)
    write_tokenizer_files(target, tokenizer)
