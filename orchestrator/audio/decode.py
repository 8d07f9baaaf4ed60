"""Audio files of every common kind, decoded on the client, block by block.

Recorded meetings arrive as WAV, FLAC, OGG (Opus, Vorbis), MP3, M4A/AAC and WebM.
:func:`open_audio` takes a path or a seekable binary file object (an upload, later over HTTP),
looks at its first bytes (not its name) and picks a reader:

* WAV: ``orchestrator.audio.wav`` (it knows every sample encoding and where the header lies);
* FLAC and OGG Vorbis/FLAC: soundfile (libsndfile), falling back to PyAV for what it cannot read;
* everything else (OGG Opus, MP3, M4A/AAC, WebM, ...): PyAV (FFmpeg's libraries, no ffmpeg
  binary). libsndfile 1.2.2 decodes Opus audibly wrong (0.83 correlation with the source where
  FFmpeg gives 0.9997), so Opus never goes to it.

Before any audio is decoded the :class:`AudioInfo` is known (duration, sample rate, channels,
codec and container), so a caller can check limits before asking a host. Audio comes out as
mono float32 blocks (channels averaged) of at most ``block_frames`` frames, optionally resampled
on the fly, so a long file never sits whole in memory as float.

A file that holds less than its header says (cut short in a copy, a recorder that crashed) is
read as far as it goes, and a warning says how much is missing and how long the audio really is;
a file with nothing usable raises ``BadAudioError``. Never silence in place of the missing part.

Client side only: soundfile and av are dependencies of the orchestrator package, imported here
lazily, and never by the host runtime.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.audio import wav
from orchestrator.audio.resample import Resampler
from orchestrator.wire.errors import BadAudioError

log = logging.getLogger("orchestrator.audio")

#: Frames per block handed to the caller (at the file's own rate).
DEFAULT_BLOCK_FRAMES = 1 << 16
#: A decode may end this far short of the declared duration (encoder priming and padding)
#: before it counts as truncated; plus TRUNCATION_TOLERANCE_FRACTION of the duration.
TRUNCATION_TOLERANCE_S = 0.1
TRUNCATION_TOLERANCE_FRACTION = 0.01
SUPPORTED = "WAV, FLAC, OGG (Opus, Vorbis), MP3, M4A/AAC, WebM"
#: After a failed read, libsndfile is re-read this many frames at a time up to the damage.
SALVAGE_FRAMES = 1024
#: Bytes read from an OGG file's end to find its last page (pages are at most ~64 KiB).
OGG_TAIL_BYTES = 70_000
OGG_END_OF_STREAM = 0x04  # header_type flag of a stream's last page

#: What can be opened: a path, or a binary file object that can seek (read from its start).
AudioSource = str | os.PathLike[str] | IO[bytes]


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file holds, known before its audio is decoded."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str

    def describe(self) -> str:
        """One line for people: "62.35 s, 44100 Hz, 2 channels, wav pcm_s16le"."""
        channels = "1 channel" if self.channels == 1 else f"{self.channels} channels"
        return (
            f"{self.duration_s:.2f} s, {self.sample_rate} Hz, {channels}, "
            f"{self.container} {self.codec}"
        )


class AudioFile:
    """An open audio file: its :attr:`info`, then its audio through :meth:`blocks`.

    ``warnings`` collects what was found wrong with the file: a lying header at open, a decode
    that ended short after :meth:`blocks` is exhausted. Each is also logged, unless
    ``log_warnings`` is off (a look at the header that a full read will follow and report).
    """

    def __init__(
        self,
        name: str,
        info: AudioInfo,
        frames: Callable[[int], Iterator[np.ndarray]],
        close: Callable[[], None],
        log_warnings: bool = True,
    ) -> None:
        self.name = name
        self.log_warnings = log_warnings
        self.info = info
        self.warnings: list[str] = []
        self.decoded_s = 0.0
        self._frames = frames
        self._close = close

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close()

    def also_close(self, close: Callable[[], None]) -> None:
        """Run ``close`` after the reader's own close (the file the reader was given)."""
        first = self._close

        def both() -> None:
            try:
                first()
            finally:
                close()

        self._close = both

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.log_warnings:
            log.warning("%s", message)

    def blocks(
        self, block_frames: int = DEFAULT_BLOCK_FRAMES, sample_rate: int | None = None
    ) -> Iterator[np.ndarray]:
        """Mono float32 blocks, resampled to ``sample_rate`` if given; at the end, checks that
        the decode reached the declared length (a warning if not, BadAudioError if nothing)."""
        resampler = (
            Resampler(self.info.sample_rate, sample_rate)
            if sample_rate and sample_rate != self.info.sample_rate
            else None
        )
        decoded = 0
        for block in self._frames(block_frames):
            decoded += block.size
            yield block if resampler is None else resampler.process(block)
        self.decoded_s = decoded / self.info.sample_rate
        if decoded == 0:
            raise BadAudioError(
                f"{self.name}: no audio could be decoded (the {self.info.container} file declares "
                f"{self.info.duration_s:.2f} s); the file is damaged or cut before its first frame"
            )
        if resampler is not None:
            tail = resampler.flush()
            if tail.size:
                yield tail
        short = self.info.duration_s - self.decoded_s
        if short > TRUNCATION_TOLERANCE_S + TRUNCATION_TOLERANCE_FRACTION * self.info.duration_s:
            self.warn(
                f"{self.name}: decoding stopped at {self.decoded_s:.2f} s of the "
                f"{self.info.duration_s:.2f} s the {self.info.container} header declares "
                f"({short:.2f} s missing: the file is truncated or damaged); the audio is "
                f"{self.decoded_s:.2f} s long"
            )

    def read(self, sample_rate: int | None = None) -> np.ndarray:
        """The whole file at once (short files, tests); prefer :meth:`blocks` for long ones."""
        return np.concatenate(list(self.blocks(sample_rate=sample_rate)))


def open_audio(source: AudioSource, *, log_warnings: bool = True) -> AudioFile:
    """Open ``source`` with the reader its first bytes call for (see the module docstring).

    A path is opened here and closed with the :class:`AudioFile`; a file object stays the
    caller's to close.
    """
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            f: IO[bytes] = Path(name).open("rb")  # noqa: SIM115 - closed with the AudioFile
        except OSError as exc:
            raise BadAudioError(
                f"{name}: cannot read the file ({exc.strerror or exc}; fix: check the path)"
            ) from None
    else:
        f, name = source, str(getattr(source, "name", "<file object>"))
        if not f.seekable():
            raise BadAudioError(
                f"{name}: the stream cannot seek (fix: save it to a file and pass the path)"
            )
    try:
        audio = _open(f, name, log_warnings)
    except BaseException:
        if f is not source:
            f.close()
        raise
    if f is not source:
        audio.also_close(f.close)
    return audio


def _open(f: IO[bytes], name: str, log_warnings: bool) -> AudioFile:
    f.seek(0)
    magic = f.read(64)  # an OGG stream names its codec in its first page
    f.seek(0)
    if not magic:
        raise BadAudioError(f"{name}: the file is empty")
    if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
        return _open_wav(f, name, log_warnings)
    if magic[:4] == b"fLaC" or (magic[:4] == b"OggS" and b"OpusHead" not in magic):
        try:
            return _open_soundfile(f, name, log_warnings)
        except BadAudioError:
            f.seek(0)  # e.g. an OGG codec libsndfile lacks: FFmpeg may know it
    return _open_av(f, name, log_warnings)


def _open_wav(f: IO[bytes], name: str, log_warnings: bool) -> AudioFile:
    layout = wav.read_wav_layout(f, name)
    info = AudioInfo(
        duration_s=layout.frames / layout.sample_rate,  # the real length, whatever the header says
        sample_rate=layout.sample_rate,
        channels=layout.channels,
        codec=f"pcm_{'f' if layout.tag == 3 else 's' if layout.bits > 8 else 'u'}{layout.bits}le",
        container="wav",
    )
    audio = AudioFile(
        name, info, lambda n: wav.iter_wav_blocks(f, layout, n), lambda: None, log_warnings
    )
    problem = layout.header_problem(name)
    if problem:
        audio.warn(problem)
    return audio


def _open_soundfile(f: IO[bytes], name: str, log_warnings: bool) -> AudioFile:
    import soundfile  # lazy: client side only, and a WAV never needs it

    try:
        sf = soundfile.SoundFile(f)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise BadAudioError(f"{name}: libsndfile cannot read it ({exc})") from None
    if sf.frames <= 0 or sf.samplerate <= 0:
        sf.close()
        raise BadAudioError(f"{name}: libsndfile found no audio frames")
    info = AudioInfo(
        duration_s=sf.frames / sf.samplerate,
        sample_rate=int(sf.samplerate),
        channels=int(sf.channels),
        codec=str(sf.subtype).lower(),
        container=str(sf.format).lower(),
    )

    def frames(block_frames: int) -> Iterator[np.ndarray]:
        done, size = 0, block_frames
        while True:
            try:
                data = sf.read(size, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                # libsndfile fails a whole read that runs into a cut: go back and creep up to
                # the cut in small reads, so everything before it is kept.
                if size <= SALVAGE_FRAMES:
                    log.debug("libsndfile stopped on %s at frame %d: %s", name, done, exc)
                    return  # the length check in AudioFile.blocks reports what is missing
                sf.seek(done)
                size = SALVAGE_FRAMES
                continue
            if not len(data):
                return
            done += len(data)
            yield data.mean(axis=1, dtype=np.float32)

    audio = AudioFile(name, info, frames, sf.close, log_warnings)
    if info.container == "ogg":
        _check_ogg_end(audio, f)
    return audio


def _check_ogg_end(audio: AudioFile, f: IO[bytes]) -> None:
    """An OGG file declares no total length: its duration is where its last page ends. A cut
    file lacks the end-of-stream page, which is what tells it from a short recording."""
    here = f.tell()  # the decoder reads the same file object: put it back where it was
    size = f.seek(0, 2)
    f.seek(max(0, size - OGG_TAIL_BYTES))
    tail = f.read()
    f.seek(here)
    last = tail.rfind(b"OggS")
    complete = last >= 0 and len(tail) - last >= 27 and tail[last + 5] & OGG_END_OF_STREAM
    if not complete:
        audio.warn(
            f"{audio.name}: the OGG stream has no end-of-stream page (the file was cut short); "
            f"what remains is {audio.info.duration_s:.2f} s long and is used"
        )


def _open_av(f: IO[bytes], name: str, log_warnings: bool) -> AudioFile:
    import av  # lazy: client side only; importing FFmpeg's libraries costs ~0.1 s

    try:
        container = av.open(f)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise BadAudioError(
            f"{name}: cannot decode it ({exc}): the file is damaged or cut short, or not one "
            f"of {SUPPORTED}"
        ) from None
    if not container.streams.audio:
        container.close()
        raise BadAudioError(f"{name}: the {container.format.name} file has no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if not stream.sample_rate or not ctx.channels:
        container.close()
        raise BadAudioError(f"{name}: the audio stream declares no sample rate or channels")
    info = AudioInfo(
        duration_s=_av_duration(container, stream),
        sample_rate=int(stream.sample_rate),
        channels=int(ctx.channels),
        codec=str(ctx.name),
        container=str(container.format.name).split(",")[0],
    )

    def frames(block_frames: int) -> Iterator[np.ndarray]:
        container.seek(0)  # _av_duration may have demuxed to the end
        pending: list[np.ndarray] = []
        held = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    pending.append(_mono_float(frame))
                    held += pending[-1].size
                if held >= block_frames:
                    yield np.concatenate(pending)
                    pending, held = [], 0
        except av.error.FFmpegError as exc:
            log.debug("FFmpeg stopped on %s: %s", name, exc)  # reported by the length check
        if pending:
            yield np.concatenate(pending)

    audio = AudioFile(name, info, frames, container.close, log_warnings)
    if info.container == "ogg":
        _check_ogg_end(audio, f)
    return audio


def _av_duration(container: Any, stream: Any) -> float:
    """The stream's declared duration; where the container has none (WebM from a browser's
    MediaRecorder), the end of its last packet, found by demuxing without decoding."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    end = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    return end


def _mono_float(frame: Any) -> np.ndarray:
    """One decoded frame as mono float32: planar or packed, float or integer samples."""
    x = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T
    kind = x.dtype.kind
    if kind == "i":
        x = x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    elif kind == "u":  # 8-bit unsigned, centred on 128
        x = (x.astype(np.float32) - 128) / np.float32(128)
    return x.mean(axis=0, dtype=np.float32)
