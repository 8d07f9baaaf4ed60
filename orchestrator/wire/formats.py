"""Audio payload formats on the wire: the one place that knows each format's sample width."""

from __future__ import annotations

import enum


class AudioFormat(enum.StrEnum):
    """Sample formats of an audio payload frame on the wire."""

    PCM16 = "pcm16"  # little-endian int16
    F32 = "f32"  # little-endian float32
