"""Fuzz suite: hostile frames at every socket and parser of the orchestrator.

Hypothesis drives malformed, truncated, oversized, replayed and badly signed multipart messages at

- the coordinator's client socket (a raw DEALER on its inproc endpoint),
- the coordinator's host socket (a raw DEALER on ``hosts.sock`` pretending to be a host),
- a real host process (``python -m orchestrator.host`` started here behind a ROUTER of ours, booted
  over stdin the way the supervisor boots it),

and arbitrary bytes at the EchoPanel frame parser. Pass means zero crashes, every rejection counted
by its receiver (the coordinator's ``dropped`` counters, the host heartbeat's ``dropped`` count) with
the reason the frames deserve, signed but nonsensical messages answered with a typed error, and a
valid request served after all of it.

Each receiver is checked after every example, so a failure shrinks to the one message that broke it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import echopanel
from orchestrator.coordinator import Coordinator
from orchestrator.echopanel import FrameError
from orchestrator.errors import ErrorCode, ProtocolError
from orchestrator.wire.protocol import (
    MAX_HEADER_BYTES,
    VERSION_FRAME,
    Codec,
    Kind,
    Message,
    new_key,
)
from support import assert_fingerprint, make_config, running, synthetic_host, tone_pcm16, wait_for

#: Small enough that oversize examples stay cheap, large enough for an oversize header inside it.
LIMIT_BYTES = 96 * 1024
RATE = 16_000
REPLY_TIMEOUT_S = 10.0
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Frames = list[bytes]
#: What one example sends: frames, and the drop reason they deserve (None: they must be accepted).
Case = list[tuple[Frames, str | None]]


# ---------------------------------------------------------------------------------- strategies
def sign(key: bytes, body: Frames) -> bytes:
    """The signature a peer holding ``key`` puts on ``body`` (HMAC-SHA256 over every body frame)."""
    return Codec(key).sign(body)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
small_headers = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
small_payloads = st.lists(st.binary(max_size=64), max_size=2)


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, RecursionError):
        return False


not_json_objects = st.one_of(
    st.binary(max_size=40).filter(lambda b: not _is_json_object(b)),
    st.sampled_from([b"[]", b"1", b'"x"', b"null", b"{", b"\xff\xfe{}", b"{'a': 1}"]),
    st.integers(1_000, 20_000).map(lambda n: b"[" * n + b"]" * n),  # nesting past the stack
    st.integers(4_400, 6_000).map(lambda n: b'{"n": ' + b"7" * n + b"}"),  # past int digits
)


@st.composite
def hostile_cases(
    draw: st.DrawFn, key: bytes, kinds: list[Kind], answered: Callable[[Codec], Frames]
) -> Case:
    """One hostile send (or a replayed pair) and the reason each must be dropped with.

    ``answered(codec)`` builds a valid message the receiver answers (the replay's original).
    """
    codec = Codec(key, max_message_bytes=10 * LIMIT_BYTES)

    def valid() -> Frames:
        kind = draw(st.sampled_from(kinds))
        # No empty payload frames: the signature does not bind frame boundaries, so cutting one
        # out leaves a genuine message (see test_signature_binds_frame_boundaries).
        payloads = draw(st.lists(st.binary(min_size=1, max_size=64), max_size=2))
        return codec.encode(Message(kind, draw(small_headers), payloads))

    category = draw(
        st.sampled_from(
            [
                "garbage", "version", "resigned", "tampered", "foreign_key", "cut_frames",
                "cut_bytes", "oversize", "oversize_header", "unknown_kind", "bad_header", "replay",
            ]
        )
    )  # fmt: skip
    if category == "garbage":
        frames = draw(st.lists(st.binary(max_size=48), min_size=1, max_size=7))
        if draw(st.booleans()):
            frames[0] = VERSION_FRAME
        if len(frames) < 4:
            return [(frames, "malformed")]
        return [(frames, "version" if frames[0] != VERSION_FRAME else "signature")]
    if category == "version":
        frames = valid()
        frames[0] = draw(st.binary(max_size=8).filter(lambda v: v != VERSION_FRAME))
        return [(frames, "version")]
    if category == "resigned":
        frames = valid()
        frames[1] = draw(st.binary(max_size=40).filter(lambda s: s != frames[1]))
        return [(frames, "signature")]
    if category == "tampered":
        frames = valid()
        index = draw(st.integers(2, len(frames) - 1))
        frame = bytearray(frames[index])
        if frame:
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= 1 << draw(st.integers(0, 7))
        else:
            frame.append(draw(st.integers(0, 255)))
        frames[index] = bytes(frame)
        return [(frames, "signature")]
    if category == "foreign_key":
        other = Codec(new_key())
        kind = draw(st.sampled_from(kinds))
        return [
            (other.encode(Message(kind, draw(small_headers), draw(small_payloads))), "signature")
        ]
    if category == "cut_frames":
        frames = valid()
        keep = draw(st.integers(1, len(frames) - 1))
        return [(frames[:keep], "malformed" if keep < 4 else "signature")]
    if category == "cut_bytes":
        frames = valid()
        index = draw(st.integers(2, len(frames) - 1))
        frames[index] = frames[index][: draw(st.integers(0, len(frames[index]) - 1))]
        return [(frames, "signature")]
    if category == "oversize":
        size = draw(st.integers(LIMIT_BYTES + 1, LIMIT_BYTES + 4096))
        return [(codec.encode(Message(Kind.TRANSCRIBE, {}, [bytes(size)])), "oversize")]
    if category == "oversize_header":
        header = json.dumps(
            {"pad": "x" * draw(st.integers(MAX_HEADER_BYTES, MAX_HEADER_BYTES + 512))}
        )
        body = [Kind.HEARTBEAT.value.encode(), header.encode()]
        return [([VERSION_FRAME, sign(key, body), *body], "oversize")]
    if category == "unknown_kind":
        known = {k.value.encode() for k in Kind}
        kind = draw(st.binary(max_size=16).filter(lambda k: k not in known))
        body = [kind, json.dumps(draw(small_headers)).encode(), *draw(small_payloads)]
        return [([VERSION_FRAME, sign(key, body), *body], "kind")]
    if category == "bad_header":
        body = [draw(st.sampled_from(kinds)).value.encode(), draw(not_json_objects)]
        return [([VERSION_FRAME, sign(key, body), *body], "malformed")]
    frames = answered(codec)
    return [(frames, None), (frames, "replay")]


# ---------------------------------------------------------------------------------- helpers
def recv(sock: zmq.Socket[Any], codec: Codec, timeout_s: float = REPLY_TIMEOUT_S) -> Message:
    assert sock.poll(timeout_s * 1000), "no answer"
    return codec.decode(sock.recv_multipart())


def coordinator_drops(coord: Coordinator, side: str) -> collections.Counter[str]:
    return collections.Counter(coord.health()["coordinator"]["dropped"][side])


def assert_counted(
    read: Callable[[], collections.Counter[str]], expected: collections.Counter[str]
) -> None:
    """The receiver's drop counters reach ``expected`` (frames are judged asynchronously)."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.002)
    assert got == expected


def assert_typed(msg: Message) -> None:
    """An ERROR message names a documented code, and not the catch-all of an unexpected failure."""
    if msg.kind is Kind.ERROR:
        code = msg.header["error"]["code"]
        assert code in set(ErrorCode) and code != ErrorCode.INTERNAL, msg.header


def health_request(codec: Codec) -> Frames:
    return codec.encode(Message(Kind.HEALTH, {"id": "replayed"}))


@pytest.fixture(scope="module")
def coord() -> Iterator[Coordinator]:
    config = make_config(
        {"syn": synthetic_host()}, max_message_bytes=LIMIT_BYTES, stream_idle_timeout_s=5.0
    )
    with running(config) as coord:
        yield coord
        assert coord._thread is not None and coord._thread.is_alive(), "the coordinator crashed"
        client = coord.sync_client()
        pcm = tone_pcm16(4000, seed=5)
        assert_fingerprint(
            client.transcribe(pcm.tobytes(), sample_rate=RATE, model="echo").text, pcm
        )
        assert coord.health()["replicas"][0]["restarts"] == 0  # no garbage reached the host
        client.close()


# ---------------------------------------------------------------------------------- coordinator
def test_client_socket_drops_and_counts_every_hostile_message(coord: Coordinator) -> None:
    sock = coord.ctx.socket(zmq.DEALER)
    sock.connect(coord.inproc_endpoint)
    reader = Codec(coord.client_key)
    seen: collections.Counter[str] = collections.Counter()
    client_kinds = [
        Kind.TRANSCRIBE,
        Kind.STREAM_OPEN,
        Kind.STREAM_AUDIO,
        Kind.HEALTH,
        Kind.HEARTBEAT,
    ]

    @FUZZ
    @given(hostile_cases(coord.client_key, client_kinds, health_request))
    def hostile(case: Case) -> None:
        expected = coordinator_drops(coord, "clients")
        for frames, reason in case:
            sock.send_multipart(frames)
            if reason is None:
                assert recv(sock, reader).kind is Kind.HEALTH_REPLY
            else:
                expected[reason] += 1
                seen[reason] += 1
        assert_counted(lambda: coordinator_drops(coord, "clients"), expected)
        assert not sock.poll(0), "a dropped message was answered"

    try:
        hostile()
    finally:
        sock.close(linger=0)
    assert set(seen) >= {"malformed", "version", "signature", "oversize", "kind", "replay"}


#: A header each kind is served with; nonsense starts from it and spoils a few fields.
SENSIBLE_HEADERS: dict[Kind, dict[str, Any]] = {
    Kind.TRANSCRIBE: {
        "model": "echo", "sample_rate": RATE, "format": "pcm16", "timeout_s": 5.0,
        "options": {"language": "en"}, "host": "syn",
    },
    Kind.STREAM_OPEN: {"model": "echo", "sample_rate": RATE, "format": "pcm16", "options": {}},
    Kind.STREAM_AUDIO: {"seq": 0},
    Kind.CONTROL: {"action": "explode", "host": "syn"},
}  # fmt: skip
FIELDS = sorted({"id", "seq", "action", *(k for h in SENSIBLE_HEADERS.values() for k in h)})
ABSENT = object()
spoilt_values = st.one_of(
    st.just(ABSENT),
    json_values,
    st.sampled_from([0, -1, 10**12, "", "abc", "16000", [], {}, None, True, 1e308]),
    st.floats(allow_nan=True, allow_infinity=True),
)
tone_bytes = st.integers(1, 4000).map(lambda n: tone_pcm16(n, seed=n).tobytes())


@st.composite
def signed_nonsense(draw: st.DrawFn) -> Message:
    """Correctly signed messages of every kind: sensible headers with a few fields spoilt."""
    kind = draw(st.sampled_from(sorted(Kind, key=str)))
    header = {"id": draw(st.text(max_size=8)), **SENSIBLE_HEADERS.get(kind, {})}
    for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True)):
        value = draw(spoilt_values)
        if value is ABSENT:
            header.pop(name, None)
        else:
            header[name] = value
    header.update(draw(small_headers))
    # An operator's action that would really stop or restart the host is not nonsense.
    if header.get("action") in ("stop", "start", "restart"):
        header["action"] = "explode"
    payloads = draw(st.just([]) | st.lists(st.binary(max_size=256) | tone_bytes, max_size=3))
    return Message(kind, header, payloads)


def test_client_socket_answers_signed_nonsense_with_typed_errors(coord: Coordinator) -> None:
    signer = Codec(coord.client_key)

    @FUZZ
    @given(signed_nonsense())
    def nonsense(msg: Message) -> None:
        # A socket of its own per example: late stream events of an earlier one cannot mix in.
        sock = coord.ctx.socket(zmq.DEALER)
        sock.connect(coord.inproc_endpoint)
        try:
            sock.send_multipart(signer.encode(msg))
            if msg.kind is not Kind.HEARTBEAT:
                assert_typed(recv(sock, signer))
        finally:
            sock.close(linger=0)

    nonsense()
    assert coord._thread is not None and coord._thread.is_alive()


def test_host_socket_drops_and_counts_frames_from_a_fake_host(coord: Coordinator) -> None:
    assert coord.run_dir is not None
    sock = coord.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, b"impostor.0#1")
    sock.connect(f"ipc://{coord.run_dir}/hosts.sock")
    key = coord._host_key  # what a host is handed on stdin
    seen: collections.Counter[str] = collections.Counter()
    host_kinds = [Kind.READY, Kind.HEARTBEAT, Kind.RESULT, Kind.ERROR, Kind.STREAM_EVENT]

    def ready(codec: Codec) -> Frames:
        return codec.encode(Message(Kind.READY, {"models": {"echo": "x"}, "pid": 1}))

    @FUZZ
    @given(hostile_cases(key, host_kinds, ready))
    def hostile(case: Case) -> None:
        expected = coordinator_drops(coord, "hosts")
        for frames, reason in case:
            sock.send_multipart(frames)
            # Well signed from an identity no replica has: a stranger with the key, not a host.
            expected[reason or "identity"] += 1
            seen[reason or "identity"] += 1
        assert_counted(lambda: coordinator_drops(coord, "hosts"), expected)

    try:
        hostile()
    finally:
        sock.close(linger=0)
    assert {r["name"] for r in coord.health()["replicas"]} == {"syn.0"}
    assert set(seen) >= {"malformed", "signature", "oversize", "replay", "identity"}


def test_signature_binds_frame_boundaries() -> None:
    key = new_key()
    frames = Codec(key).encode(Message(Kind.TRANSCRIBE, {"id": "x"}, [b"ab", b"c"]))
    for forged in ([*frames[:4], b"a", b"bc"], [*frames, b""]):  # re-split; an empty frame added
        with pytest.raises(ProtocolError, match="bad signature"):
            Codec(key).decode(forged)


# ---------------------------------------------------------------------------------- a real host
class FuzzedHost:
    """A real host process behind our ROUTER: we play the coordinator, with its key."""

    IDENTITY = b"fuzz.0#1"

    def __init__(self, folder: Path) -> None:
        self.key = new_key()
        self.codec = Codec(self.key, max_message_bytes=10 * LIMIT_BYTES)
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{folder}/hosts.sock"
        self.router.bind(endpoint)
        self.log = (folder / "host.log").open("w+b")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "orchestrator.host", "--identity", self.IDENTITY.decode(),
                "--endpoint", endpoint, "--parent-pid", str(os.getpid()),
            ],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        boot = {
            "key": self.key.hex(),
            "engine": "orchestrator.host.synthetic:SyntheticEngine",
            "models": [{"name": "echo", "ref": "synthetic"}],
            "heartbeat_interval_s": 0.05,
            "orphan_timeout_s": 60.0,  # we heartbeat only when we feel like it
            "max_message_bytes": LIMIT_BYTES,
        }
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(boot).encode() + b"\n")
        self.proc.stdin.flush()  # stdin stays open: its EOF would tell the host we died
        self.heartbeat: dict[str, Any] = {}
        self.next_id = 0
        self.wait_for_kind(Kind.READY, 30.0)

    def send(self, frames: Frames) -> None:
        self.router.send_multipart([self.IDENTITY, *frames])

    def receive(self, timeout_s: float) -> Message | None:
        if not self.router.poll(timeout_s * 1000):
            return None
        identity, *frames = self.router.recv_multipart()
        assert identity == self.IDENTITY
        msg = self.codec.decode(frames)  # the host's own messages must always pass
        if msg.kind is Kind.HEARTBEAT:
            self.heartbeat = msg.header
        return msg

    def wait_for_kind(
        self, kind: Kind, timeout_s: float = REPLY_TIMEOUT_S, rid: str | None = None
    ) -> Message:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_alive()
            msg = self.receive(0.1)
            if (
                msg is not None
                and msg.kind is kind
                and (rid is None or msg.header.get("id") == rid)
            ):
                return msg
        raise AssertionError(f"no {kind} from the host in {timeout_s}s")

    def transcribe(self, pcm: np.ndarray) -> Message:
        self.next_id += 1
        rid = f"fuzz-{self.next_id}"
        header = {
            "id": rid,
            "model": "echo",
            "sample_rate": RATE,
            "format": "pcm16",
            "timeout_s": 10.0,
        }
        self.send(self.codec.encode(Message(Kind.TRANSCRIBE, header, [pcm.tobytes()])))
        return self.answer(rid)

    def answer(self, rid: str) -> Message:
        """The RESULT or ERROR answering request ``rid`` (heartbeats met meanwhile are kept)."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.assert_alive()
            msg = self.receive(0.1)
            if (
                msg is not None
                and msg.kind in (Kind.RESULT, Kind.ERROR)
                and msg.header.get("id") == rid
            ):
                return msg
        raise AssertionError(f"request {rid} not answered")

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            self.log.seek(0)
            raise AssertionError(
                f"host exited {self.proc.returncode}:\n{self.log.read().decode()[-3000:]}"
            )

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.send(self.codec.encode(Message(Kind.SHUTDOWN, {})))
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.router.close(linger=0)
        self.ctx.term()
        self.log.close()


@pytest.fixture
def host() -> Iterator[FuzzedHost]:
    with tempfile.TemporaryDirectory(prefix="orc-fuzz-", dir="/tmp") as folder:
        fuzzed = FuzzedHost(Path(folder))
        try:
            yield fuzzed
        finally:
            fuzzed.close()


def test_real_host_drops_counts_and_survives_hostile_frames(host: FuzzedHost) -> None:
    dropped = 0
    pcm = tone_pcm16(1600, seed=1)

    def request(codec: Codec) -> Frames:
        header = {"id": "replayed", "model": "echo", "sample_rate": RATE, "format": "pcm16"}
        return codec.encode(Message(Kind.TRANSCRIBE, header, [pcm.tobytes()]))

    host_kinds = [Kind.HEARTBEAT, Kind.TRANSCRIBE, Kind.STREAM_AUDIO, Kind.STREAM_CLOSE]

    @FUZZ
    @given(hostile_cases(host.key, host_kinds, request))
    def hostile(case: Case) -> None:
        nonlocal dropped
        for frames, reason in case:
            host.send(frames)
            if reason is None:
                reply = host.wait_for_kind(Kind.RESULT, rid="replayed")
                assert_fingerprint(reply.header["result"]["text"], pcm)
            else:
                dropped += 1
        # Frames are handled in order: once this request is served, all before it were judged.
        clip = tone_pcm16(800, seed=dropped)
        reply = host.transcribe(clip)
        assert reply.kind is Kind.RESULT, reply.header
        assert_fingerprint(reply.header["result"]["text"], clip)

    hostile()
    host.heartbeat = {}
    wait_for(lambda: host.receive(0.1) and host.heartbeat.get("dropped") == dropped, 10.0, "count")
    assert host.heartbeat["state"] == "ready"


def test_real_host_answers_signed_nonsense_and_keeps_serving(host: FuzzedHost) -> None:
    @FUZZ
    @given(signed_nonsense().filter(lambda m: m.kind is not Kind.SHUTDOWN))
    def nonsense(msg: Message) -> None:
        rid = msg.header["id"] = f"nonsense-{host.next_id}"  # so its answer can be told apart
        host.send(host.codec.encode(msg))
        if msg.kind is Kind.TRANSCRIBE:  # the coordinator forwards these headers from clients
            assert_typed(host.answer(rid))
        clip = tone_pcm16(800, seed=host.next_id)
        reply = host.transcribe(clip)
        assert reply.kind is Kind.RESULT, reply.header
        assert_fingerprint(reply.header["result"]["text"], clip)

    nonsense()
    host.heartbeat = {}
    wait_for(lambda: host.receive(0.1) and host.heartbeat.get("dropped") == 0, 10.0, "heartbeat")


# ---------------------------------------------------------------------------------- EchoPanel
REASONS = {"short", "bad_magic", "version", "source", "mode", "odd_pcm"}


def frame_fault(data: bytes) -> str | None:
    """What is wrong with a frame, read straight from the documented layout (the oracle)."""
    if len(data) < echopanel.HEADER_SIZE:
        return "short"
    if data[:2] != b"EP":
        return "bad_magic"
    if data[2] != echopanel.PROTOCOL_VERSION:
        return "version"
    if data[3] not in (0, 1):
        return "source"
    if data[4] not in (0, 1, 2):
        return "mode"
    if (len(data) - echopanel.HEADER_SIZE) % 2:
        return "odd_pcm"
    return None


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """Valid frames with bytes flipped, cut, inserted or appended; or any bytes at all."""
    pcm = draw(st.binary(max_size=400).map(lambda b: b[: len(b) // 2 * 2]))
    data = bytearray(
        echopanel.build_frame(
            pcm, source=draw(st.sampled_from(list(echopanel.Source))), mode=draw(st.sampled_from(list(echopanel.Mode)))
        )
    )  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.sampled_from(["flip", "cut", "insert", "append"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if edit == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        else:
            data += draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(mutated_frames(), st.binary(max_size=16)),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_echopanel_parser_refuses_exactly_the_faulty_frames(data: bytes, container: type) -> None:
    fault = frame_fault(data)
    try:
        frame = echopanel.parse_frame(container(data))
    except FrameError as err:
        assert err.reason == fault and err.reason in REASONS
        wire = json.loads(json.dumps(err.to_wire()))  # the refusal survives the wire as is
        assert wire["code"] == ErrorCode.BAD_REQUEST and wire["details"]["reason"] == fault
        return
    assert fault is None
    assert frame.pcm == data[echopanel.HEADER_SIZE :]
    rebuilt = echopanel.build_frame(frame.pcm, source=frame.source, mode=frame.mode)
    assert rebuilt == data and echopanel.parse_frame(rebuilt) == frame
    assert frame.samples().size == len(frame.pcm) // 2
