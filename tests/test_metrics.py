"""The Prometheus endpoint, scraped over HTTP from a real coordinator with synthetic hosts."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from cli_support import (
    ServeProcess,
    public_coordinator,
    short_tmp_dir,
    synthetic_toml,
    write_config,
)
from orchestrator.coordinator import Coordinator
from orchestrator.coordinator.config import config_from_dict
from orchestrator.coordinator.metrics import MetricsServer, build_registry, start_metrics
from orchestrator.errors import UnknownModelError
from orchestrator.wire.protocol import Codec, Kind, Message, new_key
from support import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: Generous: a scrape takes one snapshot on the broker thread.
SCRAPE_TIMEOUT_S = 10.0


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


def scrape(url: str) -> Samples:
    """Every sample of the endpoint, parsed by prometheus-client's own parser (so it is valid)."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_endpoint_reports_states_requests_errors_drops_and_resources(
    tmp_short: Path,
) -> None:
    raw = synthetic_toml(
        tmp_short / "rt",
        {
            "syn": {"models": {"echo": "synthetic"}, "replicas": 2},
            "other": {"models": {"echo": "synthetic"}},
        },
    )
    with public_coordinator(config_from_dict(raw)) as coord:
        server = start_metrics(coord, 0)
        client = coord.sync_client()
        try:
            assert server.url.startswith("http://127.0.0.1:")  # loopback only
            for i in range(3):
                client.transcribe(np.full(1600, i, np.int16), sample_rate=16000, model="echo")
            with pytest.raises(UnknownModelError):
                client.transcribe(np.ones(160, np.int16), sample_rate=16000, model="missing")
            _send_badly_signed_frame(coord)
            wait_for(
                lambda: coord.health()["coordinator"]["dropped"]["clients"], what="the drop counted"
            )
            # RSS is sampled on the supervisor's cadence: until a replica's first sample after its
            # start (late on a loaded machine) there is no reading, or one of a process still
            # exec'ing. Wait for a real one of every replica; the bound below stays as it was.
            wait_for(
                lambda: all((r["rss_mb"] or 0) > 1 for r in coord.health()["replicas"]),
                what="an RSS sample of every replica",
            )

            samples = scrape(server.url)
            assert value(samples, "orchestrator_up") == 1
            assert value(samples, "orchestrator_status", status="ready") == 1
            assert value(samples, "orchestrator_status", status="degraded") == 0
            assert value(samples, "orchestrator_requests_total") == 3
            assert value(samples, "orchestrator_results_total") == 3
            assert value(samples, "orchestrator_request_errors_total", code="unknown_model") == 1
            assert (
                value(
                    samples,
                    "orchestrator_dropped_messages_total",
                    socket="clients",
                    reason="signature",
                )
                == 1
            )
            assert value(samples, "orchestrator_queue_depth") == 0
            assert value(samples, "orchestrator_model_ready_replicas", model="echo") == 3
            replicas = {"syn.0": "syn", "syn.1": "syn", "other.0": "other"}
            served = 0.0
            for name, host in replicas.items():
                labels = {"replica": name, "host": host}
                assert value(samples, "orchestrator_replica_state", state="ready", **labels) == 1
                assert value(samples, "orchestrator_replica_state", state="failed", **labels) == 0
                assert value(samples, "orchestrator_replica_restarts_total", **labels) == 0
                assert value(samples, "orchestrator_replica_inflight_requests", **labels) == 0
                assert value(samples, "orchestrator_replica_active_streams", **labels) == 0
                assert value(samples, "orchestrator_replica_rss_bytes", **labels) > 2**20
                assert value(samples, "orchestrator_replica_cpu_percent", **labels) >= 0
                assert value(samples, "orchestrator_replica_uptime_seconds", **labels) > 0
                assert value(samples, "orchestrator_replica_heartbeat_age_seconds", **labels) >= 0
                assert value(samples, "orchestrator_replica_package_info", package="numpy", version=np.__version__, **labels) == 1  # fmt: skip
                served += value(samples, "orchestrator_replica_served_total", **labels)
            assert served == 3
            assert value(samples, "process_open_fds") > 0  # the coordinator's own process

            # A stopped host shows in the state gauge and turns the status to degraded.
            client.control("stop", "other")
            wait_for(
                lambda: coord.health()["replicas"][2]["state"] == "stopped", what="other stopped"
            )
            samples = scrape(server.url)
            stopped = {"replica": "other.0", "host": "other"}
            assert value(samples, "orchestrator_replica_state", state="stopped", **stopped) == 1
            assert value(samples, "orchestrator_replica_state", state="ready", **stopped) == 0
            assert value(samples, "orchestrator_status", status="degraded") == 1
            assert value(samples, "orchestrator_model_ready_replicas", model="echo") == 2
            assert (
                "orchestrator_replica_rss_bytes",
                frozenset(stopped.items()),
            ) not in samples  # no process
        finally:
            client.close()
            server.close()
    with pytest.raises(urllib.error.URLError):  # closed: the port is released
        urllib.request.urlopen(server.url, timeout=SCRAPE_TIMEOUT_S)


def _send_badly_signed_frame(coord: Coordinator) -> None:
    """A well-formed health request signed with another key, to the public endpoint."""
    assert coord.ctx is not None and coord.public_endpoint is not None
    sock = coord.ctx.socket(zmq.DEALER)
    try:
        sock.connect(coord.public_endpoint)
        sock.send_multipart(Codec(new_key()).encode(Message(Kind.HEALTH, {"id": "forged"})))
    finally:
        sock.close(linger=1000)


def test_a_coordinator_that_cannot_answer_scrapes_as_down_not_as_an_error(tmp_short: Path) -> None:
    never_started = Coordinator(
        config_from_dict(
            synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
        )
    )
    server = MetricsServer(build_registry(lambda: never_started.health(1.0)), 0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    assert value(samples, "orchestrator_up") == 0
    assert not any(name.startswith("orchestrator_replica") for name, _ in samples)


def test_serve_with_metrics_port_zero_serves_metrics_on_a_free_port_until_stopped(
    tmp_short: Path,
) -> None:
    raw = synthetic_toml(tmp_short / "rt", {"syn": {"models": {"echo": "synthetic"}}})
    serve = ServeProcess("--config", str(write_config(tmp_short, raw)), "--metrics-port", "0")
    try:
        url = serve.wait_listening()["metrics"]
        samples = scrape(url)
        assert value(samples, "orchestrator_up") == 1
        assert (
            value(samples, "orchestrator_replica_state", replica="syn.0", host="syn", state="ready")
            == 1
        )
        assert serve.stop(signal.SIGTERM) == 0
    finally:
        serve.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S)
