"""The supervisor/host contract: what the coordinator tells a host at start and how a host ends.

The supervisor writes the :class:`BootDocument` as one JSON line on the host's stdin (so the
signing key is never in argv or the environment) and branches on the host's exit code; the host
runtime reads the document and exits with these codes. Defaults both sides share are written here
once. Standard library only (host side).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from orchestrator.wire.errors import BadRequestError

#: Exit codes the supervisor branches on.
EXIT_OK = 0
EXIT_ENGINE_FAILED = 3  # the engine could not start at all: restarting will not help
EXIT_ORPHANED = 4

#: Heartbeats go both ways this often.
DEFAULT_HEARTBEAT_INTERVAL_S = 0.25
#: A host that hears nothing from the coordinator this long exits on its own.
DEFAULT_ORPHAN_TIMEOUT_S = 2.5
#: Ceiling of one whole message, header and payloads (config may lower or raise it).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Sample rate every engine receives; the host runtime resamples to it.
ENGINE_SAMPLE_RATE = 16_000
#: The segmenter's voice-activity detectors (``[segmenter] vad``), the default first.
VAD_KINDS = ("silero", "energy")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model a host serves: ``name`` is what requests say, ``ref`` a hub id or a local path."""

    name: str
    ref: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Loaded at its first request instead of before the host reports ready.
    on_demand: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class SegmenterSettings:
    """Streaming utterance detection, run by each host for every stream; the ``[segmenter]``
    table of the config. Durations are rounded to whole frames."""

    sample_rate_hz: int = ENGINE_SAMPLE_RATE
    frame_ms: int = 20
    #: Voice-activity detector: "silero" (a speech model; the energy detector stands in, with a
    #: warning, where it cannot load) or "energy" (frame level against the thresholds below).
    vad: str = "silero"
    #: Silero speech probability at which a window turns speech, and below which it turns
    #: silence again (hysteresis). Silero's own 0.5/0.35 took 20 dB babble for speech in up to
    #: 22% of the pauses; clear speech scores above 0.99, so the stricter pair loses none.
    vad_speech_probability: float = 0.9
    vad_silence_probability: float = 0.7
    #: Silero's speech must also stand this far above the room's tracked noise floor (None:
    #: off): background voices are speech to the model, not the speaker to transcribe.
    vad_min_snr_db: float | None = 10.0
    #: A frame whose RMS level (dB relative to full scale, a full-scale sine is -3 dBFS) exceeds
    #: this is speech.
    speech_threshold_dbfs: float = -45.0
    #: If set, a frame must also exceed the tracked noise floor by this much (noisy rooms).
    noise_floor_margin_db: float | None = None
    #: How fast the noise floor may rise; it falls at once to any quieter frame.
    noise_floor_rise_db_per_s: float = 2.0
    #: Speech must last this long to open an utterance (clicks and pops do not).
    min_speech_ms: float = 60.0
    #: This much silence ends an utterance.
    end_silence_ms: float = 400.0
    #: Longer utterances are cut here (engines get bounded audio; text arrives steadily).
    max_utterance_s: float = 15.0
    #: New audio between partial decodes of the open utterance.
    partial_interval_ms: float = 500.0
    #: Audio kept before a speech onset, so the first phoneme is not clipped.
    pre_roll_ms: float = 300.0
    #: Decoding this far behind the live audio makes the host skip partials (never audio).
    lag_skip_s: float = 1.5

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or self.sample_rate_hz * self.frame_ms % 1000:
            raise BadRequestError(
                f"segmenter frame_ms={self.frame_ms} must be a positive whole number of samples "
                f"at {self.sample_rate_hz} Hz"
            )
        for name in (
            "min_speech_ms",
            "end_silence_ms",
            "partial_interval_ms",
            "max_utterance_s",
        ):
            if not getattr(self, name) > 0:
                raise BadRequestError(
                    f"segmenter {name} must be positive, got {getattr(self, name)}"
                )
        if self.vad not in VAD_KINDS:
            raise BadRequestError(
                f"segmenter vad={self.vad!r} is not one of {', '.join(VAD_KINDS)}"
            )
        if not 0 < self.vad_silence_probability <= self.vad_speech_probability < 1:
            raise BadRequestError(
                "segmenter needs 0 < vad_silence_probability <= vad_speech_probability < 1, got "
                f"{self.vad_silence_probability} and {self.vad_speech_probability}"
            )
        if self.pre_roll_ms < 0:
            raise BadRequestError(f"segmenter pre_roll_ms must be >= 0, got {self.pre_roll_ms}")
        if self.max_utterance_s * 1000 <= self.pre_roll_ms + self.min_speech_ms + self.frame_ms:
            raise BadRequestError(
                "segmenter max_utterance_s must exceed pre_roll_ms + min_speech_ms"
            )

    @property
    def frame_samples(self) -> int:
        return self.sample_rate_hz * self.frame_ms // 1000

    def frames(self, ms: float) -> int:
        """A duration in whole frames, at least one."""
        return max(1, round(ms / self.frame_ms))


@dataclasses.dataclass(frozen=True)
class BootDocument:
    """Everything the coordinator tells a host at start."""

    key: bytes
    engine: str
    models: tuple[ModelSpec, ...]
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    engine_threads: int = 1
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    orphan_timeout_s: float = DEFAULT_ORPHAN_TIMEOUT_S
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    segmenter: SegmenterSettings = dataclasses.field(default_factory=SegmenterSettings)
    warmup: bool = True
    #: An on-demand model unused this long is unloaded (its memory returned); 0 keeps it.
    idle_unload_s: float = 0.0

    def to_json(self) -> str:
        """One line of JSON (the key as hex), as the supervisor writes it to the host's stdin."""
        return json.dumps(
            {
                "key": self.key.hex(),
                "engine": self.engine,
                "models": [
                    {
                        "name": m.name,
                        "ref": m.ref,
                        "options": dict(m.options),
                        "on_demand": m.on_demand,
                    }
                    for m in self.models
                ],
                "engine_options": dict(self.engine_options),
                "engine_threads": self.engine_threads,
                "heartbeat_interval_s": self.heartbeat_interval_s,
                "orphan_timeout_s": self.orphan_timeout_s,
                "max_message_bytes": self.max_message_bytes,
                "segmenter": dataclasses.asdict(self.segmenter),
                "warmup": self.warmup,
                "idle_unload_s": self.idle_unload_s,
            }
        )

    @classmethod
    def from_json(cls, line: str) -> BootDocument:
        """The document a host reads from stdin; absent optional fields take the defaults."""
        data = json.loads(line)
        optional: dict[str, Any] = {
            name: convert(data[name])
            for name, convert in _OPTIONAL_FIELDS.items()
            if data.get(name) is not None
        }
        return cls(
            key=bytes.fromhex(data["key"]),
            engine=data["engine"],
            models=tuple(
                ModelSpec(m["name"], m["ref"], m.get("options") or {}, bool(m.get("on_demand")))
                for m in data["models"]
            ),
            **optional,
        )


#: Fields a boot document may leave out, and how each is read from JSON.
_OPTIONAL_FIELDS: dict[str, Any] = {
    "engine_options": dict,
    "engine_threads": int,
    "heartbeat_interval_s": float,
    "orphan_timeout_s": float,
    "max_message_bytes": int,
    "segmenter": lambda table: SegmenterSettings(**table),
    "warmup": bool,
    "idle_unload_s": float,
}
