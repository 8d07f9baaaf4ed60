"""Recipe of the tiny Qwen3-ASR checkpoint: the transformers layout that both stacks load.

Built by :mod:`tiny_checkpoints` (``--model qwen3-asr``, the default). The same
directory loads in qwen-asr 0.0.6 (legacy env) and in mlx-audio 0.3.1 (MLX env), so the two
hosts can be handed the same model and compared.

Traps both stacks set for a tiny model (each one is handled below, and fails silently if not):

* ``thinker_config.audio_token_id`` must be the tokenizer's ``<|audio_pad|>`` id, or no audio
  reaches the decoder.
* ``audio_config.n_window`` must stay 50: the processors hard-code the real model's 100-frame
  chunking when counting audio tokens.
* ``audio_config.output_dim`` must equal the text hidden size (the projector feeds the decoder).
* ``rope_scaling.mrope_section`` must sum to ``head_dim / 2``.
* ``<asr_text>`` is a non-special added token (qwen-asr parses it out of the decoded text), and
  the tokenizer config names ``audio_token`` / ``audio_bos_token`` / ``audio_eos_token`` as
  ``extra_special_tokens`` (the qwen-asr processor reads them as attributes).
* ``<|audio_pad|>`` must stay one token in both tokenizers (``tokenizer.json``, which
  transformers 5 reads first, and ``vocab.json``/``merges.txt`` + ``added_tokens_decoder``), or
  the prompt silently holds bytes instead of audio; the engine tests check its length.
* mlx-audio's ``sanitize()`` drops ``lm_head.weight`` (and takes a small ``lm_head`` for the
  forced aligner's), so the embeddings are tied and no lm_head is saved.
* Both stacks stop only on the real model's end-of-sequence ids, which a tiny vocabulary does
  not contain: whoever generates with this model must cap the number of tokens.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

from tiny_checkpoints.files import (
    BYTE_VOCAB_SIZE,
    WEIGHT_STD,
    added_tokens_decoder,
    byte_level_tokenizer_json,
    padded_vocab_size,
    recipe,
    whisper_feature_extractor,
    write_byte_level_vocab,
    write_json,
    write_weights,
)

logger = logging.getLogger(__name__)

NAME = "qwen3-asr"
#: Bump when the files written change, so older builds are rebuilt instead of reused.
RECIPE_VERSION = 1

#: Special tokens, in id order after the byte tokens. Their names are the real model's.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
)
#: Added but not special: qwen-asr finds it in the decoded text to split language from text.
ASR_TEXT_TOKEN = "<asr_text>"

#: The Qwen2 pre-tokenizer split pattern (what the real tokenizer.json uses).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SUPPORTED_LANGUAGES = ("Chinese", "English", "Cantonese", "Japanese", "Korean", "German", "French")

#: Chat template producing the real model's prompt layout: the system turn carries the context,
#: the user turn one audio placeholder that the processor expands to one token per audio frame.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclasses.dataclass(frozen=True)
class TinySizes:
    """Dimensions of the tiny model: small enough to build and run in well under a second."""

    hidden_size: int = 32
    intermediate_size: int = 64
    text_layers: int = 1
    attention_heads: int = 2
    kv_heads: int = 1
    head_dim: int = 16
    #: Must sum to head_dim / 2 (interleaved multimodal RoPE of the legacy stack).
    mrope_section: tuple[int, int, int] = (4, 2, 2)
    audio_layers: int = 1
    audio_heads: int = 2
    audio_ffn_dim: int = 64
    downsample_hidden_size: int = 8
    #: The real feature extractor's mel bins; the processors compute 128 whatever the model says.
    num_mel_bins: int = 128
    #: Must stay 50 (see the module docstring).
    n_window: int = 50
    n_window_infer: int = 800

    @property
    def vocab_size(self) -> int:
        return padded_vocab_size(BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS) + 1)


SIZES = TinySizes()


def token_id(token: str) -> int:
    """Id of a special or added token in the tiny vocabulary."""
    if token == ASR_TEXT_TOKEN:
        return BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS)
    return BYTE_VOCAB_SIZE + SPECIAL_TOKENS.index(token)


def model_config(sizes: TinySizes) -> dict:
    """config.json: the transformers layout both stacks parse (model_type qwen3_asr + thinker)."""
    audio_config = {
        "model_type": "qwen3_asr_audio_encoder",
        "num_mel_bins": sizes.num_mel_bins,
        "encoder_layers": sizes.audio_layers,
        "encoder_attention_heads": sizes.audio_heads,
        "encoder_ffn_dim": sizes.audio_ffn_dim,
        "d_model": sizes.hidden_size,
        "activation_function": "gelu",
        "max_source_positions": 1500,
        "n_window": sizes.n_window,
        "n_window_infer": sizes.n_window_infer,
        "output_dim": sizes.hidden_size,
        "conv_chunksize": 500,
        "downsample_hidden_size": sizes.downsample_hidden_size,
        "scale_embedding": False,
    }
    text_config = {
        "model_type": "qwen3_asr_text",
        "vocab_size": sizes.vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.attention_heads,
        "num_key_value_heads": sizes.kv_heads,
        "head_dim": sizes.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 65536,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": list(sizes.mrope_section),
            "interleaved": True,
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": True,
        "attention_bias": False,
        "use_cache": True,
    }
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": list(SUPPORTED_LANGUAGES),
        "torch_dtype": "float32",
        "tie_word_embeddings": True,
        "thinker_config": {
            "model_type": "qwen3_asr_thinker",
            "audio_config": audio_config,
            "text_config": text_config,
            "audio_token_id": token_id("<|audio_pad|>"),
            "audio_start_token_id": token_id("<|audio_start|>"),
            "audio_end_token_id": token_id("<|audio_end|>"),
            "user_token_id": token_id("<|im_start|>"),
            "initializer_range": WEIGHT_STD,
            "tie_word_embeddings": True,
        },
    }


def parameter_shapes(sizes: TinySizes) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every saved tensor of Qwen3ASRForConditionalGeneration, in PyTorch layout, fixed order.

    No ``thinker.lm_head.weight``: the embeddings are tied (see the module docstring).
    """
    d, ds = sizes.hidden_size, sizes.downsample_hidden_size
    freq_after_conv = (((sizes.num_mel_bins + 1) // 2 + 1) // 2 + 1) // 2
    audio = "thinker.audio_tower."
    yield audio + "conv2d1.weight", (ds, 1, 3, 3)
    yield audio + "conv2d1.bias", (ds,)
    for conv in ("conv2d2", "conv2d3"):
        yield audio + f"{conv}.weight", (ds, ds, 3, 3)
        yield audio + f"{conv}.bias", (ds,)
    yield audio + "conv_out.weight", (d, ds * freq_after_conv)
    for i in range(sizes.audio_layers):
        layer = f"{audio}layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield layer + f"self_attn.{proj}.weight", (d, d)
            yield layer + f"self_attn.{proj}.bias", (d,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            yield layer + f"{norm}.weight", (d,)
            yield layer + f"{norm}.bias", (d,)
        yield layer + "fc1.weight", (sizes.audio_ffn_dim, d)
        yield layer + "fc1.bias", (sizes.audio_ffn_dim,)
        yield layer + "fc2.weight", (d, sizes.audio_ffn_dim)
        yield layer + "fc2.bias", (d,)
    yield audio + "ln_post.weight", (d,)
    yield audio + "ln_post.bias", (d,)
    yield audio + "proj1.weight", (d, d)
    yield audio + "proj1.bias", (d,)
    yield audio + "proj2.weight", (d, d)
    yield audio + "proj2.bias", (d,)

    text = "thinker.model."
    q_dim, kv_dim = sizes.attention_heads * sizes.head_dim, sizes.kv_heads * sizes.head_dim
    yield text + "embed_tokens.weight", (sizes.vocab_size, d)
    for i in range(sizes.text_layers):
        layer = f"{text}layers.{i}."
        yield layer + "self_attn.q_proj.weight", (q_dim, d)
        yield layer + "self_attn.k_proj.weight", (kv_dim, d)
        yield layer + "self_attn.v_proj.weight", (kv_dim, d)
        yield layer + "self_attn.o_proj.weight", (d, q_dim)
        yield layer + "self_attn.q_norm.weight", (sizes.head_dim,)
        yield layer + "self_attn.k_norm.weight", (sizes.head_dim,)
        yield layer + "mlp.gate_proj.weight", (sizes.intermediate_size, d)
        yield layer + "mlp.up_proj.weight", (sizes.intermediate_size, d)
        yield layer + "mlp.down_proj.weight", (d, sizes.intermediate_size)
        yield layer + "input_layernorm.weight", (d,)
        yield layer + "post_attention_layernorm.weight", (d,)
    yield text + "norm.weight", (d,)


def tokenizer_config() -> dict:
    """tokenizer_config.json as the real repo has it, down to the audio token attributes."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder(SPECIAL_TOKENS, [ASR_TEXT_TOKEN]),
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": {
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def preprocessor_config(sizes: TinySizes) -> dict:
    """preprocessor_config.json: the real Whisper-style log-mel front end at 16 kHz."""
    return whisper_feature_extractor(
        sizes.num_mel_bins, "Qwen3ASRProcessor", dither=0.0, return_attention_mask=True
    )


def describe(seed: int) -> dict:
    return recipe(NAME, RECIPE_VERSION, seed, SIZES)


def write(target: Path, seed: int) -> None:
    """Write every file of the checkpoint into ``target`` (an empty directory)."""
    write_weights(target / "model.safetensors", parameter_shapes(SIZES), seed, layout="pt")
    write_json(target / "config.json", model_config(SIZES))
    logger.info("writing tokenizer (%d tokens)", SIZES.vocab_size)
    write_byte_level_vocab(target)
    (target / "tokenizer.json").write_text(
        byte_level_tokenizer_json(
            SPECIAL_TOKENS, [ASR_TEXT_TOKEN], QWEN2_SPLIT_PATTERN, normalize_nfc=True
        ),
        encoding="utf-8",
    )
    write_json(target / "tokenizer_config.json", tokenizer_config())
    write_json(target / "preprocessor_config.json", preprocessor_config(SIZES))
    write_json(target / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
