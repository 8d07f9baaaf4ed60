"""Host side of streaming: turns any engine into a streaming one.

Neither stack streams Qwen3-ASR incrementally, so per stream the host buffers audio, finds
utterance ends with the segmenter (Silero VAD by default, see ``vad``), re-decodes the open
utterance at a cadence for partials and decodes each finished utterance for its final. One decode runs per
stream at a time; finals queue in order, go before any partial and are never skipped; a partial
that went stale while another decode ran is replaced by the newer one (counted), and the
segmenter asks for none while an utterance trails off, so no partial is running when its final
falls due. When decoding falls behind real time
by more than ``lag_skip_s``, partials are skipped entirely until it catches up: never audio.

Every event carries ``lag_s``: how much audio arrived after the audio its result (or, for other
events, the oldest unfinished decode) ends with. Silence the segmenter discarded is no decode's
work, so it is never lag: after a long pause the host is caught up, not behind. Finals
carry ``audio_offset`` and ``n_samples`` (in the stream's own sample rate), and periodic
``progress`` events tell the coordinator up to which sample nothing more is needed, so it can
drop its replay buffer: audio since the last confirmed point is all it must keep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from orchestrator.audio.pcm import decode_payload
from orchestrator.audio.resample import Resampler
from orchestrator.host.engine import ENGINE_SAMPLE_RATE, Engine
from orchestrator.host.segmenter import Action, DecodeFinal, StreamSegmenter
from orchestrator.host.vad import VadFactory
from orchestrator.wire.bodies import HOST_STREAM_KEY, StreamChunk, StreamOpen
from orchestrator.wire.contract import SegmenterSettings
from orchestrator.wire.errors import (
    OrchestratorError,
    StreamClosedError,
    StreamSequenceError,
)
from orchestrator.wire.messages import EventType
from orchestrator.wire.protocol import Kind, Message

#: Send a progress event when the confirmed point advanced by this much audio.
PROGRESS_EVERY_S = 1.0


@dataclasses.dataclass(eq=False)
class HostStream:
    sid: str
    model: str
    options: dict[str, Any]
    sample_rate: int
    fmt: str
    start_sample: int
    #: Number of the segmenter's utterance 0 in the stream (a failover goes on counting).
    first_utterance: int
    segmenter: StreamSegmenter
    resampler: Resampler | None
    next_seq: int = 0
    finals: deque[DecodeFinal] = dataclasses.field(default_factory=deque)
    partial: Action | None = None
    decoding: bool = False
    closing: bool = False
    #: End (16 kHz stream index) of the audio of the decode now running.
    running_end: int | None = None
    #: Partials replaced by a newer one before they were decoded.
    partials_superseded: int = 0
    reported: int = 0  # last confirmed sample reported to the coordinator (16 kHz)
    #: Stream index of the first sample of the final being decoded (its audio must be kept).
    hold: int | None = None

    def to_input(self, index16: int) -> int:
        """A 16 kHz stream index as a sample index of the stream's own rate, absolute."""
        if self.sample_rate == ENGINE_SAMPLE_RATE:
            return self.start_sample + index16
        return self.start_sample + round(index16 * self.sample_rate / ENGINE_SAMPLE_RATE)

    @property
    def offset_s(self) -> float:
        return self.start_sample / self.sample_rate

    def lag_s(self) -> float:
        """Audio received past the end of the oldest decode not finished yet; 0 when idle."""
        if self.running_end is not None:
            oldest = self.running_end
        elif self.finals:
            oldest = _end(self.finals[0])
        elif self.partial is not None:
            oldest = _end(self.partial)
        else:
            return 0.0
        return self.lag_after(oldest)

    def lag_after(self, end16: int) -> float:
        return max(0, self.segmenter.stats.samples_in - end16) / ENGINE_SAMPLE_RATE

    def partials_skipped(self) -> int:
        """Partials never decoded: superseded while another decode ran, or skipped for lag."""
        return self.partials_superseded + self.segmenter.stats.partials_skipped


def _end(action: Action) -> int:
    return action.audio_offset + action.audio.size


class StreamHost(Protocol):
    """What streams need of the host runtime: no more, so this module does not import it."""

    def send(self, msg: Message) -> None:
        """Send a message to the coordinator (main thread)."""

    def check_model(self, model: str) -> None:
        """Raise the typed error if this host cannot serve ``model``."""

    def using_model(self, model: str) -> contextlib.AbstractContextManager[float]:
        """Hold ``model`` loaded (loading it first) while a decode runs (worker thread)."""

    def submit(
        self, job_id: str, work: Callable[[], Any], reply: Callable[[Any, Any], None]
    ) -> None:
        """Run ``work`` on the engine pool; ``reply(result, error)`` later on the main thread."""


class HostStreams:
    """All streams of one host; the runtime's main thread drives it."""

    def __init__(
        self,
        host: StreamHost,
        engine: Engine,
        settings: SegmenterSettings,
        vad: VadFactory | None = None,
    ) -> None:
        self.host = host
        self.engine = engine
        self.settings = settings
        self.vad = vad or VadFactory(settings)
        self.streams: dict[str, HostStream] = {}

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "stream_lag_s": round(max((s.lag_s() for s in self.streams.values()), default=0.0), 3),
        }

    def emit(self, stream: HostStream, event: dict[str, Any]) -> None:
        event.setdefault("lag_s", round(stream.lag_s(), 3))
        self.host.send(Message(Kind.STREAM_EVENT, {"sid": stream.sid, **event}))

    def error(self, sid: str, err: OrchestratorError) -> None:
        self.host.send(
            Message(
                Kind.STREAM_EVENT, {"sid": sid, "type": EventType.ERROR, "error": err.to_wire()}
            )
        )

    def handle(self, msg: Message) -> None:
        sid = str(msg.header.get(HOST_STREAM_KEY))  # errors name the stream even if its body is bad
        try:
            if msg.kind is Kind.STREAM_OPEN:
                self.open(sid, StreamOpen.from_header(msg.header, HOST_STREAM_KEY))
            elif msg.kind is Kind.STREAM_AUDIO:
                chunk = StreamChunk.from_header(msg.header, HOST_STREAM_KEY)
                self.audio(self._get(sid), chunk.seq, msg.payloads)
            else:
                self.close(self._get(sid))
        except OrchestratorError as exc:
            self.error(sid, exc)

    def _get(self, sid: str) -> HostStream:
        stream = self.streams.get(sid)
        if stream is None:
            raise StreamClosedError(f"no stream {sid!r} on this host")
        return stream

    def open(self, sid: str, body: StreamOpen) -> None:
        self.host.check_model(body.model)
        self.engine.check_options(body.options)
        rate = body.sample_rate
        self.streams[sid] = HostStream(
            sid=sid,
            model=body.model,
            options=body.options,
            sample_rate=rate,
            fmt=body.format,
            start_sample=body.start_sample,
            first_utterance=body.first_utterance,
            segmenter=StreamSegmenter(self.settings, self.vad.detector()),
            resampler=None if rate == ENGINE_SAMPLE_RATE else Resampler(rate, ENGINE_SAMPLE_RATE),
        )

    def audio(self, stream: HostStream, seq: int, payloads: list[bytes]) -> None:
        if seq != stream.next_seq:
            raise StreamSequenceError(f"expected chunk {stream.next_seq}, got {seq!r}")
        stream.next_seq += 1
        if stream.closing:
            raise StreamClosedError("stream is closing")
        samples = decode_payload(
            payloads[0] if payloads else b"",
            stream.fmt,
            stream.sample_rate,
            allow_empty=True,
        )
        if stream.resampler is not None:
            samples = stream.resampler.process(samples)
        behind = stream.lag_s() > self.settings.lag_skip_s
        self.take(stream, stream.segmenter.push(samples, skip_partials=behind))

    def close(self, stream: HostStream) -> None:
        if stream.closing:
            return
        stream.closing = True
        tail: list[Action] = []
        if stream.resampler is not None:
            rest = stream.resampler.flush()
            if rest.size:
                tail = stream.segmenter.push(rest, skip_partials=True)
        self.take(stream, [*tail, *stream.segmenter.flush()])
        self.maybe_finish(stream)

    def take(self, stream: HostStream, actions: list[Action]) -> None:
        """Queue the segmenter's decodes: finals in order, only the newest partial."""
        for action in actions:
            if isinstance(action, DecodeFinal):
                stream.finals.append(action)
                if stream.partial is not None:
                    stream.partials_superseded += 1
                    stream.partial = None  # the final supersedes it
            else:
                if stream.partial is not None:
                    stream.partials_superseded += 1
                stream.partial = action
        self.report_progress(stream)
        self.pump(stream)

    def pump(self, stream: HostStream) -> None:
        if stream.decoding:
            return
        if stream.finals:
            action: Action = stream.finals.popleft()
        elif stream.partial is not None:
            action, stream.partial = stream.partial, None
        else:
            return
        stream.decoding = True
        stream.hold = action.audio_offset if isinstance(action, DecodeFinal) else None
        stream.running_end = _end(action)
        engine, model, options = self.engine, stream.model, stream.options
        clip = action.audio

        def work() -> Any:
            with self.host.using_model(model):
                t0 = time.monotonic()
                result = engine.transcribe(model, clip, options)
            return result, time.monotonic() - t0

        def reply(out: Any, error: Any) -> None:
            stream.decoding = False
            stream.hold = stream.running_end = None
            if error is not None:
                utterance = stream.first_utterance + action.utterance_id
                event = {"type": EventType.ERROR, "error": error.to_wire(), "utterance": utterance}
                self.emit(stream, event)
            else:
                result, compute_s = out
                self.emit(stream, self.event_for(stream, action, result, compute_s))
            self.report_progress(stream)
            self.pump(stream)
            self.maybe_finish(stream)

        self.host.submit(f"{stream.sid}:{action.utterance_id}", work, reply)

    def event_for(
        self, stream: HostStream, action: Action, result: Any, compute_s: float
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "utterance": stream.first_utterance + action.utterance_id,
            "text": result.text,
            "start_s": round(stream.offset_s + action.start_s, 4),
            "end_s": round(stream.offset_s + action.end_s, 4),
            "language": result.language,
            # Engines time segments and words from the clip's start; events speak stream time.
            "segments": [
                s.shifted(stream.offset_s + action.audio_offset / ENGINE_SAMPLE_RATE).to_wire()
                for s in result.segments
            ],
            "compute_s": round(compute_s, 4),
            "partials_skipped": stream.partials_skipped(),
            # How stale this result is: audio that arrived after the audio it covers.
            "lag_s": round(stream.lag_after(_end(action)), 3),
        }
        if isinstance(action, DecodeFinal):
            first = stream.to_input(action.audio_offset)
            end = stream.to_input(action.audio_offset + action.audio.size)
            event.update(
                type=EventType.FINAL,
                reason=str(action.reason),
                audio_offset=first,
                n_samples=end - first,
                end_sample=end,
            )
        else:
            event["type"] = EventType.PARTIAL
        return event

    def report_progress(self, stream: HostStream) -> None:
        """Tell the coordinator which audio it no longer needs to keep for a replay."""
        stats = stream.segmenter.stats
        decided = stats.samples_in - stats.samples_pending
        # A final still to be decoded (or being decoded) needs its audio kept.
        held = [f.audio_offset for f in stream.finals]
        if stream.hold is not None:
            held.append(stream.hold)
        decided = min([decided, *held])
        if decided - stream.reported >= PROGRESS_EVERY_S * ENGINE_SAMPLE_RATE:
            stream.reported = decided
            self.emit(
                stream, {"type": EventType.PROGRESS, "confirmed_sample": stream.to_input(decided)}
            )

    def maybe_finish(self, stream: HostStream) -> None:
        if stream.closing and not stream.decoding and not stream.finals:
            # Counts of this host's part of the stream, in stream samples; the coordinator, which
            # saw the whole stream, puts the whole stream's totals in the event the client gets.
            samples_in = stream.to_input(stream.segmenter.stats.samples_in) - stream.start_sample
            self.emit(
                stream,
                {
                    "type": EventType.CLOSED,
                    "samples_in": samples_in,
                    "partials_skipped": stream.partials_skipped(),
                },
            )
            self.streams.pop(stream.sid, None)
            self.vad.release(stream.segmenter.detector)
