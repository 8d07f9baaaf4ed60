"""Writes a Whisper checkpoint in Hugging Face's layout, for ``WhisperForConditionalGeneration``.

The files are those of OpenAI's own ``openai/whisper-*.en`` repos (config, generation config,
processor and tokenizer files, ``model.safetensors``), so transformers 4.57 loads the folder with
``from_pretrained`` like any hub snapshot. Weights stay in their stored dtype (float16 for the
bundled model: nothing is lost, half the disk); the engine chooses the compute dtype at load.

Generation settings (suppress lists, lengths) live only in ``generation_config.json``: transformers
4.57 warns on every load when the model config repeats them. One trap, kept out on purpose: no ``lang_to_id`` in ``generation_config.json``. transformers treats
a generation config that has one as multilingual and runs language detection on every window of
this English-only model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.models.safetensors_file import write_safetensors
from orchestrator.models.whisper_ct2 import WhisperCheckpoint
from orchestrator.models.whisper_tokenizer import (
    END_OF_TEXT,
    NO_TIMESTAMPS,
    token_id,
    write_json,
    write_preprocessor_config,
    write_tokenizer_files,
)

#: transformers' default bound on the first timestamp of a window (in 20 ms steps).
MAX_INITIAL_TIMESTAMP_INDEX = 50

_DTYPE_NAMES = {np.dtype("<f2"): "float16", np.dtype("<f4"): "float32"}


def write_hf_whisper(target: Path, checkpoint: WhisperCheckpoint, tokenizer: dict) -> None:
    """Write every file of the Hugging Face layout into ``target`` (an empty folder)."""
    dims = checkpoint.dims
    tensors = uniform_dtype(checkpoint.tensors)
    dtype = _DTYPE_NAMES[next(iter(tensors.values())).dtype]
    write_safetensors(target / "model.safetensors", tensors, metadata={"format": "pt"})
    ffn = checkpoint.tensors["model.encoder.layers.0.fc1.weight"].shape[0]
    eot = token_id(tokenizer, END_OF_TEXT)
    sot = token_id(tokenizer, "<|startoftranscript|>")
    ids = {
        "bos_token_id": sot,
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": eot,
    }
    write_json(
        target / "config.json",
        {
            **ids,
            "activation_dropout": 0.0,
            "activation_function": "gelu",
            "architectures": ["WhisperForConditionalGeneration"],
            "attention_dropout": 0.0,
            "d_model": dims.n_audio_state,
            "decoder_attention_heads": dims.n_text_head,
            "decoder_ffn_dim": ffn,
            "decoder_layerdrop": 0.0,
            "decoder_layers": dims.n_text_layer,
            "dropout": 0.0,
            "encoder_attention_heads": dims.n_audio_head,
            "encoder_ffn_dim": ffn,
            "encoder_layerdrop": 0.0,
            "encoder_layers": dims.n_audio_layer,
            "init_std": 0.02,
            "is_encoder_decoder": True,
            "max_source_positions": dims.n_audio_ctx,
            "max_target_positions": dims.n_text_ctx,
            "model_type": "whisper",
            "num_hidden_layers": dims.n_audio_layer,
            "num_mel_bins": dims.n_mels,
            "scale_embedding": False,
            "tie_word_embeddings": True,
            "torch_dtype": dtype,
            "use_cache": True,
            "vocab_size": dims.n_vocab,
        },
    )
    write_json(
        target / "generation_config.json",
        {
            **ids,
            "alignment_heads": checkpoint.alignment_heads,
            "begin_suppress_tokens": checkpoint.begin_suppress_tokens,
            "is_multilingual": False,
            "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX,
            "no_timestamps_token_id": token_id(tokenizer, NO_TIMESTAMPS),
            "prev_sot_token_id": token_id(tokenizer, "<|startofprev|>"),
            "max_length": dims.n_text_ctx,
            "return_timestamps": False,
            "suppress_tokens": checkpoint.suppress_tokens,
        },
    )
    write_preprocessor_config(target, dims.n_mels)
    write_tokenizer_files(target, tokenizer)


def uniform_dtype(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors as they are if they share one dtype, else all widened to float32."""
    if len({a.dtype for a in tensors.values()}) == 1:
        return tensors
    return {name: a.astype(np.float32) for name, a in tensors.items()}
