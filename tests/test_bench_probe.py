"""The scale bench's host-side probe still sees every stream chunk: it wraps a method of the host
runtime, so a change of that method's signature would otherwise turn every probed chunk into an
error and the scale figures into a measurement of error handling."""

from __future__ import annotations

import json
from pathlib import Path

from bench.bare import stamp
from bench.stream_probe import PROBE_FILE_ENV
from support import make_config, running, synthetic_host

CHUNK_BYTES = 640  # 20 ms of 16 kHz PCM16
CHUNKS = 10


def test_the_probe_records_each_chunk_and_the_stream_stays_clean(tmp_path: Path) -> None:
    probe = tmp_path / "arrivals.jsonl"
    host = synthetic_host(
        engine="bench.stream_probe:ProbeEngine", env_vars={PROBE_FILE_ENV: str(probe)}
    )
    with running(make_config({"syn": host})) as coord:
        client = coord.sync_client()
        with client.stream(model="echo", sample_rate=16_000) as stream:
            for _ in range(CHUNKS):
                chunk = bytearray(CHUNK_BYTES)
                stamp(chunk)
                stream.send(bytes(chunk))
            stream.close()
            events = list(stream)
    assert not [e for e in events if e.type == "error"], events
    [record] = [json.loads(line) for line in probe.read_text().splitlines()]
    assert len(record["sent_ns"]) == len(record["arrived_ns"]) == CHUNKS
    assert all(0 < a - s < 5e9 for s, a in zip(record["sent_ns"], record["arrived_ns"]))
