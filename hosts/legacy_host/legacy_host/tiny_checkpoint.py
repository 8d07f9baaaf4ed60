"""Build a tiny random-weight Qwen3-ASR checkpoint in the hub repo's file layout.

No machine of this project reaches the model hub, so the engine tests and the demo load this
checkpoint through the real public APIs of both stacks (qwen-asr/transformers here, mlx-audio in
the MLX env). Its text is gibberish; every file and code path around it is the real one.

Run it as::

    envs/legacy_host/bin/python -m legacy_host.tiny_checkpoint OUT_DIR

It needs only numpy, safetensors and tokenizers (no torch import), so it takes well under a second,
and it writes the same bytes for the same seed. A directory that already holds a complete build
with the same recipe is left alone, so callers can run it unconditionally.

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
* mlx-audio reads ``tokenizer.json`` (without it the prompt silently holds no audio tokens) and
  its ``sanitize()`` drops ``lm_head.weight``, so the embeddings are tied and no lm_head is saved.
* Both stacks stop only on the real model's end-of-sequence ids, which a tiny vocabulary does
  not contain: whoever generates with this model must cap the number of tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Bump when the files written change, so older builds are rebuilt instead of reused.
RECIPE_VERSION = 1
#: Written last: its presence (with the matching recipe) is what "complete" means.
MANIFEST_NAME = "tiny_checkpoint.json"
DEFAULT_SEED = 0
#: Standard deviation of the random weights (the usual transformer initializer range).
WEIGHT_STD = 0.02

#: Special tokens, in id order after the 256 byte tokens. Their names are the real model's.
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
BYTE_VOCAB_SIZE = 256

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
        # Byte tokens, the special tokens and <asr_text>, rounded up to a multiple of 8.
        used = BYTE_VOCAB_SIZE + len(SPECIAL_TOKENS) + 1
        return -(-used // 8) * 8


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


def random_weights(sizes: TinySizes, seed: int) -> dict[str, np.ndarray]:
    """Weights as a freshly initialised model has them: normal matrices, unit norms, zero biases."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in parameter_shapes(sizes):
        if name.endswith(".bias"):
            value = np.zeros(shape, dtype=np.float32)
        elif len(shape) == 1:  # LayerNorm / RMSNorm scales
            value = np.ones(shape, dtype=np.float32)
        else:
            value = rng.normal(0.0, WEIGHT_STD, size=shape).astype(np.float32)
        weights[name] = value
    return weights


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
    """vocab.json: one token per byte, so any text encodes and decodes without merges."""
    table = _bytes_to_unicode()
    return {table[b]: b for b in range(BYTE_VOCAB_SIZE)}


def tokenizer_json() -> str:
    """tokenizer.json of a Qwen2-style byte-level BPE tokenizer over the tiny vocabulary."""
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
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    tokenizer.add_tokens([AddedToken(ASR_TEXT_TOKEN, special=False, normalized=False)])
    for token in (*SPECIAL_TOKENS, ASR_TEXT_TOKEN):
        if tokenizer.token_to_id(token) != token_id(token):
            raise RuntimeError(
                f"tokenizer gave {token} id {tokenizer.token_to_id(token)}, expected {token_id(token)}"
            )
    return tokenizer.to_str(pretty=True)


def tokenizer_config() -> dict:
    """tokenizer_config.json as the real repo has it, down to the audio token attributes."""

    def entry(token: str, special: bool) -> dict:
        return {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }

    added = {str(token_id(t)): entry(t, True) for t in SPECIAL_TOKENS}
    added[str(token_id(ASR_TEXT_TOKEN))] = entry(ASR_TEXT_TOKEN, False)
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
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
    return {
        "chunk_length": 30,
        "dither": 0.0,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": sizes.num_mel_bins,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "Qwen3ASRProcessor",
        "return_attention_mask": True,
        "sampling_rate": 16000,
    }


def recipe(sizes: TinySizes, seed: int) -> dict:
    """What a build is made from; a directory built from another recipe is rebuilt."""
    return {"recipe_version": RECIPE_VERSION, "seed": seed, "sizes": dataclasses.asdict(sizes)}


def _read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(out_dir: Path, sizes: TinySizes = TinySizes(), seed: int = DEFAULT_SEED) -> bool:
    """True if ``out_dir`` holds a whole build of this recipe (every file present, sizes right)."""
    manifest = _read_manifest(out_dir)
    if manifest is None or manifest.get("recipe") != json.loads(json.dumps(recipe(sizes, seed))):
        return False
    files = manifest.get("files", {})
    return bool(files) and all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size
        for name, size in files.items()
    )


def _write_files(target: Path, sizes: TinySizes, seed: int) -> None:
    from safetensors.numpy import save_file

    def write_json(name: str, data: object) -> None:
        (target / name).write_text(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )

    weights = random_weights(sizes, seed)
    logger.info(
        "writing %d tensors (%d parameters)", len(weights), sum(w.size for w in weights.values())
    )
    # transformers refuses safetensors files without format metadata.
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    write_json("config.json", model_config(sizes))
    logger.info("writing tokenizer (%d tokens)", sizes.vocab_size)
    write_json("vocab.json", byte_vocab())
    (target / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (target / "tokenizer.json").write_text(tokenizer_json() + "\n", encoding="utf-8")
    write_json("tokenizer_config.json", tokenizer_config())
    write_json("preprocessor_config.json", preprocessor_config(sizes))
    write_json("chat_template.json", {"chat_template": CHAT_TEMPLATE})
    files = {p.name: p.stat().st_size for p in sorted(target.iterdir())}
    write_json(MANIFEST_NAME, {"recipe": recipe(sizes, seed), "files": files})


def build(out_dir: Path | str, *, sizes: TinySizes = TinySizes(), seed: int = DEFAULT_SEED) -> Path:
    """Build the checkpoint into ``out_dir`` unless a complete build of this recipe is there.

    The files are written into a sibling temporary directory and moved into place at the end, so
    an interrupted build never leaves a directory that looks complete. A non-empty ``out_dir``
    that is not one of our builds is refused rather than overwritten.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    if is_complete(out_dir, sizes, seed):
        logger.info("already built: %s", out_dir)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and _read_manifest(out_dir) is None:
        raise FileExistsError(f"{out_dir} exists, is not empty and is not a tiny checkpoint build")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        _write_files(staging, sizes, seed)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a stale or partial build of ours (checked above)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if is_complete(out_dir, sizes, seed):  # a concurrent builder won the race: fine
            return out_dir
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m legacy_host.tiny_checkpoint",
        description="Build a tiny random-weight Qwen3-ASR checkpoint (transformers layout) that "
        "loads in qwen-asr and in mlx-audio.",
    )
    parser.add_argument(
        "out_dir", type=Path, help="directory to create (left alone if already built)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of the weights")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="tiny_checkpoint: %(message)s", stream=sys.stdout
    )
    started = time.perf_counter()
    try:
        out_dir = build(args.out_dir, seed=args.seed)
    except FileExistsError as exc:
        print(f"tiny_checkpoint: error: {exc}", file=sys.stderr)
        return 2
    print(f"tiny_checkpoint: ready in {time.perf_counter() - started:.2f} s: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
