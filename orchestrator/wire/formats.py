"""Audio payload formats on the wire: the one place that knows each format's sample width."""

from __future__ import annotations

import enum


class AudioFormat(enum.StrEnum):
    """Sample formats of an audio payload frame on the wire."""

    PCM16 = "pcm16"  # little-endian int16
    F32 = "f32"  # little-endian float32


#: Bytes of one sample of each format: the one place that knows them.
BYTES_PER_SAMPLE: dict[AudioFormat, int] = {AudioFormat.PCM16: 2, AudioFormat.F32: 4}


def bytes_per_sample(fmt: object) -> int | None:
    """The sample width of a format name, or None for a name that is not a format."""
    try:
        return BYTES_PER_SAMPLE[AudioFormat(fmt)]
    except ValueError:
        return None
