"""Small audio files in every format the client decodes, made with soundfile and PyAV (no ffmpeg
binary): shared by ``tests/test_decode.py`` and the ``decode`` bench group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Format name -> (file suffix, writer, codec or subtype, container or None).
FORMATS: dict[str, tuple[str, str, str, str | None]] = {
    "wav": (".wav", "soundfile", "PCM_16", None),
    "flac": (".flac", "soundfile", "PCM_16", None),
    "ogg-vorbis": (".ogg", "soundfile", "VORBIS", None),
    "ogg-opus": (".opus", "av", "libopus", "ogg"),
    "mp3": (".mp3", "av", "libmp3lame", "mp3"),
    "m4a-aac": (".m4a", "av", "aac", "mp4"),
    "webm-opus": (".webm", "av", "libopus", "webm"),
}
WRITE_BLOCK_FRAMES = 16_384
#: Opus only runs at 48 kHz (and a few lower rates); the others keep the source rate.
OPUS_RATE = 48_000


def write_audio(path: Path, audio: np.ndarray, rate: int, fmt: str) -> Path:
    """Write ``audio`` (float, shape (n,) or (n, channels)) as ``fmt``; returns the path."""
    suffix, writer, codec, container = FORMATS[fmt]
    path = path.with_suffix(suffix)
    x = audio.reshape(audio.shape[0], -1).astype(np.float32)
    if writer == "soundfile":
        import soundfile

        # In blocks: libsndfile 1.2.2's Vorbis encoder crashes on one large write.
        with soundfile.SoundFile(
            str(path), "w", rate, x.shape[1], subtype=codec, format=suffix[1:].upper()
        ) as out:
            for start in range(0, x.shape[0], WRITE_BLOCK_FRAMES):
                out.write(x[start : start + WRITE_BLOCK_FRAMES])
        return path
    import av

    layout = "mono" if x.shape[1] == 1 else "stereo"
    out_rate = OPUS_RATE if codec == "libopus" else rate
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate, layout=layout)
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout=layout, rate=out_rate
        )
        planar = np.ascontiguousarray(x.T)
        for start in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return path
