"""Audio payload formats on the wire: the one place that knows each format's sample width."""

from __future__ import annotations

import enum
import operator

from orchestrator.wire.errors import BadAudioError

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000


class AudioFormat(enum.StrEnum):
    """Sample formats of an audio payload frame on the wire."""

    PCM16 = "pcm16"  # little-endian int16
    F32 = "f32"  # little-endian float32


#: Each format by its name: a name from a header is checked, and its format found, by one lookup
#: (no enum call: the host checks one per request, the coordinator one per request too).
FORMATS_BY_NAME: dict[str, AudioFormat] = {f.value: f for f in AudioFormat}

#: Bytes of one sample of each format: the one place that knows them. Keyed by the members,
#: which equal their names, so a checked name ("pcm16") finds its width without an enum call.
BYTES_PER_SAMPLE: dict[str, int] = {AudioFormat.PCM16: 2, AudioFormat.F32: 4}


def bytes_per_sample(fmt: object) -> int | None:
    """The sample width of a format name, or None for a name that is not a format."""
    try:
        return BYTES_PER_SAMPLE[AudioFormat(fmt)]
    except ValueError:
        return None


def check_sample_rate(sample_rate: object) -> int:
    """The sample rate as an int, or BadAudioError if it is not a whole number in range."""
    if isinstance(sample_rate, bool):
        raise BadAudioError(f"sample rate must be an integer in Hz, got {sample_rate!r}")
    try:
        rate = operator.index(sample_rate)  # ints and numpy ints; refuses 16000.5 and "16000"
    except TypeError:
        raise BadAudioError(
            f"sample rate must be an integer in Hz, got {sample_rate!r}",
            sample_rate=repr(sample_rate),
        ) from None
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise BadAudioError(
            f"sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}] Hz",
            sample_rate=rate,
        )
    return rate
