"""A CTranslate2 Whisper model as plain Whisper weights: undo CTranslate2's fusions, check the rest.

CTranslate2's Whisper converter (``WhisperLoader`` in ``ctranslate2/converters/transformers.py``)
stores a Hugging Face ``WhisperForConditionalGeneration`` with three changes this module undoes:

* self-attention q, k and v are one matrix (``self_attention/linear_0``, rows q then k then v),
  and cross-attention k and v are one (``attention/linear_1``); their biases are concatenated the
  same way, with zeros where Whisper's key projection has no bias;
* the decoder's output projection is an alias of the token embeddings (Whisper ties them);
* names follow CTranslate2's layer specs (``ffn/linear_0`` is ``fc1``, ``gamma`` is a weight, ...).

The result is the tensors under Hugging Face's names (``model.encoder.layers.0.self_attn.q_proj.
weight``), in their stored dtype, plus the model's dimensions: the one neutral form both
:mod:`orchestrator.models.hf_whisper` and :mod:`orchestrator.models.mlx_whisper` write from.

Refused, with the file named: another architecture, settings Whisper never has (a non-GELU
activation, post-norm, scaled embeddings, ALiBi), an untied projection and multilingual models
(their tokenizer and generation config need language tokens this converter does not write).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from orchestrator.models.ct2_format import REBUILD_FIX, Ct2Model, read_model_bin, unavailable

#: CTranslate2's Activation enum value for exact GELU (ctranslate2/specs/common_spec.py).
CT2_GELU = 3
#: A Whisper vocabulary this large carries the language tokens of the multilingual models.
MULTILINGUAL_MIN_VOCAB = 51865
#: Settings every CTranslate2 WhisperSpec has; another value means another architecture.
_REQUIRED_SCALARS = {
    "decoder/activation": CT2_GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


@dataclasses.dataclass(frozen=True)
class WhisperDims:
    """Whisper's hyper-parameters under OpenAI's names (what mlx-audio's config uses too)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


@dataclasses.dataclass(frozen=True)
class WhisperCheckpoint:
    """Unfused weights under Hugging Face's names, the dimensions and the generation settings."""

    dims: WhisperDims
    tensors: dict[str, np.ndarray]
    alignment_heads: list[list[int]]
    suppress_tokens: list[int]
    begin_suppress_tokens: list[int]


def load_ct2_whisper(model_dir: Path) -> WhisperCheckpoint:
    """Read ``model_dir/model.bin`` and ``config.json`` into a :class:`WhisperCheckpoint`."""
    model = read_model_bin(model_dir / "model.bin")
    config = _read_config(model_dir / "config.json")
    if model.spec != "WhisperSpec":
        raise unavailable(
            model.path,
            f"is a CTranslate2 {model.spec}, not a Whisper model",
            "name a Whisper model (ct2-transformers-converter of a WhisperForConditionalGeneration)",
        )
    for name, expected in _REQUIRED_SCALARS.items():
        if model.scalars.get(name) != expected:
            raise unavailable(
                model.path,
                f"{name} is {model.scalars.get(name)!r}, Whisper has {expected}: not a Whisper architecture this converter knows",
                "use a model converted from a Hugging Face Whisper checkpoint",
            )
    if model.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise unavailable(
            model.path,
            "the decoder projection is not tied to the token embeddings, as every Whisper's is",
            "use a model converted from a Hugging Face Whisper checkpoint",
        )
    dims = _dims(model)
    if dims.n_vocab >= MULTILINGUAL_MIN_VOCAB:
        raise unavailable(
            model.path,
            f"is a multilingual Whisper ({dims.n_vocab} tokens); only English-only models "
            "(*.en, 51864 tokens) are converted",
            "use an English-only model such as whisper-tiny.en",
        )
    tensors = {
        **_stack_tensors(model, "encoder", dims.n_audio_layer, dims.n_audio_state, cross=False)
    }
    tensors.update(
        _stack_tensors(model, "decoder", dims.n_text_layer, dims.n_text_state, cross=True)
    )
    tensors["model.encoder.conv1.weight"] = model.tensor("encoder/conv1/weight")
    tensors["model.encoder.conv1.bias"] = model.tensor("encoder/conv1/bias")
    tensors["model.encoder.conv2.weight"] = model.tensor("encoder/conv2/weight")
    tensors["model.encoder.conv2.bias"] = model.tensor("encoder/conv2/bias")
    tensors["model.decoder.embed_tokens.weight"] = model.tensor("decoder/embeddings/weight")
    return WhisperCheckpoint(
        dims=dims,
        tensors=tensors,
        alignment_heads=[[int(a), int(b)] for a, b in config.get("alignment_heads") or []],
        suppress_tokens=[int(t) for t in config.get("suppress_ids") or []],
        begin_suppress_tokens=[int(t) for t in config.get("suppress_ids_begin") or []],
    )


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise unavailable(
            path, "is missing (a CTranslate2 Whisper model has one)", REBUILD_FIX
        ) from None
    except (OSError, ValueError) as exc:
        raise unavailable(path, f"is not readable JSON: {exc}", REBUILD_FIX) from None


def _layer_count(model: Ct2Model, stack: str) -> int:
    indices = {
        int(m.group(2))
        for name in model.tensors
        if (m := _LAYER.match(name)) and m.group(1) == stack
    }
    if not indices or indices != set(range(len(indices))):
        raise unavailable(model.path, f"has no contiguous {stack} layers", REBUILD_FIX)
    return len(indices)


def _dims(model: Ct2Model) -> WhisperDims:
    conv1 = model.tensor("encoder/conv1/weight")  # (state, n_mels, kernel)
    embeddings = model.tensor("decoder/embeddings/weight")  # (vocab, state)
    return WhisperDims(
        n_mels=conv1.shape[1],
        n_audio_ctx=model.tensor("encoder/position_encodings/encodings").shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=int(model.scalars["encoder/num_heads"]),
        n_audio_layer=_layer_count(model, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=model.tensor("decoder/position_encodings/encodings").shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=int(model.scalars["decoder/num_heads"]),
        n_text_layer=_layer_count(model, "decoder"),
    )


def _norm(model: Ct2Model, source: str, target: str) -> dict[str, np.ndarray]:
    return {
        f"{target}.weight": model.tensor(f"{source}/gamma"),
        f"{target}.bias": model.tensor(f"{source}/beta"),
    }


def _linear(model: Ct2Model, source: str, target: str) -> dict[str, np.ndarray]:
    return {
        f"{target}.weight": model.tensor(f"{source}/weight"),
        f"{target}.bias": model.tensor(f"{source}/bias"),
    }


def _split(
    model: Ct2Model, source: str, targets: tuple[str, ...], state: int
) -> dict[str, np.ndarray]:
    """Unfuse a concatenated projection into ``targets`` (``k_proj`` loses its bias).

    The stored key bias is dropped, not checked for zeros: a bias added to every key shifts each
    query's scores by one constant, which softmax cancels, so dropping it is exact either way.
    """
    weight, bias = model.tensor(f"{source}/weight"), model.tensor(f"{source}/bias")
    if weight.shape != (state * len(targets), state) or bias.shape != (state * len(targets),):
        raise unavailable(
            model.path,
            f"{source} has shape {weight.shape}, expected {(state * len(targets), state)}",
            REBUILD_FIX,
        )
    out: dict[str, np.ndarray] = {}
    for index, target in enumerate(targets):
        rows = slice(index * state, (index + 1) * state)
        out[f"{target}.weight"] = weight[rows]
        if not target.endswith("k_proj"):
            out[f"{target}.bias"] = bias[rows]
    return out


def _stack_tensors(
    model: Ct2Model, stack: str, layers: int, state: int, *, cross: bool
) -> dict[str, np.ndarray]:
    """One encoder or decoder stack under Hugging Face's names."""
    hf = f"model.{stack}"
    out = {
        f"{hf}.embed_positions.weight": model.tensor(f"{stack}/position_encodings/encodings"),
        **_norm(model, f"{stack}/layer_norm", f"{hf}.layer_norm"),
    }
    for i in range(layers):
        ct2, layer = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
        attn = f"{layer}.self_attn"
        out.update(
            _norm(model, f"{ct2}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm")
        )
        out.update(
            _split(
                model,
                f"{ct2}/self_attention/linear_0",
                (f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"),
                state,
            )
        )
        out.update(_linear(model, f"{ct2}/self_attention/linear_1", f"{attn}.out_proj"))
        if cross:
            cross_attn = f"{layer}.encoder_attn"
            out.update(
                _norm(model, f"{ct2}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm")
            )
            out.update(_linear(model, f"{ct2}/attention/linear_0", f"{cross_attn}.q_proj"))
            out.update(
                _split(
                    model,
                    f"{ct2}/attention/linear_1",
                    (f"{cross_attn}.k_proj", f"{cross_attn}.v_proj"),
                    state,
                )
            )
            out.update(_linear(model, f"{ct2}/attention/linear_2", f"{cross_attn}.out_proj"))
        out.update(_norm(model, f"{ct2}/ffn/layer_norm", f"{layer}.final_layer_norm"))
        out.update(_linear(model, f"{ct2}/ffn/linear_0", f"{layer}.fc1"))
        out.update(_linear(model, f"{ct2}/ffn/linear_1", f"{layer}.fc2"))
    return out
