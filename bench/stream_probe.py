"""Host-side probe of the scale figures: when did each stream chunk reach the host runtime?

Loaded in a synthetic host as its engine (``engine = "bench.stream_probe:ProbeEngine"``), which
is the only way into the host process a benchmark has without changing the runtime. Importing
this module wraps two methods of :class:`orchestrator.host.streams.HostStreams`, in that host
process only:

* ``audio``: before the runtime's own handling, record (send time, now) for the chunk. The
  benchmark client wrote its send time (CLOCK_MONOTONIC ns, shared by all processes on Linux) in
  the chunk's first 8 bytes just before calling ``send``; "now" is when the host runtime hands
  the decoded, signature-checked chunk to its stream handler. So the figure covers client
  encode, client -> coordinator, the coordinator's decode/route/re-sign, coordinator -> host and
  the host's decode.
* ``close``: append that stream's record to the file named by ``$BENCH_STREAM_PROBE_FILE``
  (one JSON line per stream) before the runtime closes the stream, so the record is on disk
  before the client sees ``closed``.

The engine itself is the synthetic one, unchanged.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bench.bare import stamp_of
from orchestrator.host.streams import HostStreams
from orchestrator.host.synthetic import SyntheticEngine

PROBE_FILE_ENV = "BENCH_STREAM_PROBE_FILE"
_records: dict[str, tuple[list[int], list[int]]] = {}
_audio = HostStreams.audio
_close = HostStreams.close


def _probed_audio(self: HostStreams, stream: Any, seq: int, payloads: list[bytes]) -> None:
    arrived = time.monotonic_ns()
    if payloads:
        sent, got = _records.setdefault(stream.sid, ([], []))
        sent.append(stamp_of(payloads[0]))
        got.append(arrived)
    _audio(self, stream, seq, payloads)


def _probed_close(self: HostStreams, stream: Any) -> None:
    sent, got = _records.pop(stream.sid, ([], []))
    path = os.environ.get(PROBE_FILE_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"sid": stream.sid, "sent_ns": sent, "arrived_ns": got}) + "\n")
    _close(self, stream)


HostStreams.audio = _probed_audio  # type: ignore[method-assign]
HostStreams.close = _probed_close  # type: ignore[method-assign]


class ProbeEngine(SyntheticEngine):
    """The synthetic engine; importing its module installs the probe."""
