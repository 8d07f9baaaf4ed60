"""Greedy Whisper decoding of given log-mel features in one stack; run by a host env's interpreter.

    python tests/whisper_greedy_probe.py features  HF_DIR WAV OUT.npy
    python tests/whisper_greedy_probe.py ct2       CT2_DIR FEATURES.npy MAX_NEW_TOKENS
    python tests/whisper_greedy_probe.py hf        HF_DIR  FEATURES.npy MAX_NEW_TOKENS
    python tests/whisper_greedy_probe.py mlx       MLX_DIR FEATURES.npy MAX_NEW_TOKENS

Each decoder mode prints one JSON line: the generated token ids (without the prompt, up to and
excluding end-of-text). Every stack decodes the same 80 x 3000 float32 features in float32, from
the prompt ``<|startoftranscript|><|notimestamps|>``, with Whisper's suppress lists, greedily:
so their ids must be equal, which text from raw audio cannot show (each library pads the 30 s
window its own way). Used by ``tests/test_bundled_whisper.py``; it lives apart from the test
because each mode imports a stack only one env has.
"""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import numpy as np

SOT, NO_TIMESTAMPS, EOT = "<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"


def read_wav_16k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != 16_000 or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16 kHz mono 16-bit PCM")
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768


def features(hf_dir: str, wav: str, out: str) -> None:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(hf_dir)
    mel = extractor(read_wav_16k(Path(wav)), sampling_rate=16_000, return_tensors="np")
    np.save(out, mel.input_features[0].astype(np.float32))


def _until_eot(ids: list[int], eot: int) -> list[int]:
    return ids[: ids.index(eot)] if eot in ids else ids


def ct2(model_dir: str, mel: np.ndarray, max_new: int) -> list[int]:
    import ctranslate2

    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    vocab = (Path(model_dir) / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    prompt = [vocab.index(SOT), vocab.index(NO_TIMESTAMPS)]
    result = model.generate(
        ctranslate2.StorageView.from_array(mel[None]),
        [prompt],
        beam_size=1,
        max_length=max_new,
        suppress_blank=True,
        suppress_tokens=[-1],
    )[0]
    return _until_eot(result.sequences_ids[0], vocab.index(EOT))


def hf(model_dir: str, mel: np.ndarray, max_new: int) -> list[int]:
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model.generate(
            input_features=torch.from_numpy(mel[None]),
            max_new_tokens=max_new,
            do_sample=False,
            num_beams=1,
            return_timestamps=False,
        )
    ids = out[0].tolist()
    prompt = [
        model.generation_config.decoder_start_token_id,
        model.generation_config.no_timestamps_token_id,
    ]
    ids = ids[len(prompt) :] if ids[: len(prompt)] == prompt else ids
    return _until_eot(ids, model.generation_config.eos_token_id)


def mlx(model_dir: str, mel: np.ndarray, max_new: int) -> list[int]:
    import mlx.core as mx
    from mlx_audio.stt.models.whisper.decoding import DecodingOptions, decode
    from mlx_audio.stt.utils import load_model

    model = load_model(model_dir, strict=True)
    model.set_dtype(mx.float32)  # stored float16; compare in float32 like the other stacks
    model.dtype = mx.float32
    options = DecodingOptions(
        temperature=0.0, sample_len=max_new, without_timestamps=True, fp16=False, language="en"
    )
    # mlx-audio takes (frames, mels); the others (mels, frames).
    result = decode(model, mx.array(mel.T[None]), options)[0]
    return _until_eot(list(result.tokens), model.get_tokenizer().eot)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "features":
        features(*argv[2:5])
        return
    decoder = {"ct2": ct2, "hf": hf, "mlx": mlx}[mode]
    ids = decoder(argv[2], np.load(argv[3]).astype(np.float32), int(argv[4]))
    print(json.dumps({"mode": mode, "ids": [int(i) for i in ids]}))


if __name__ == "__main__":
    main(sys.argv)
