"""How long and how hard each group measures: the quick profile (default) and ``--full``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    #: Sequential round trips per client style and target, per round.
    round_trips: int
    warmup_round_trips: int
    #: Requests per pipelined throughput measurement, per round, and how many stay in flight.
    pipelined_requests: int
    pipeline_window: int
    #: Ours and the baselines are measured in alternation this many times, results pooled, so
    #: a neighbour's burst of load hurts both sides alike.
    rounds: int
    failover_trials: int
    stream_counts: tuple[int, ...]
    stream_warmup_s: float
    stream_measure_s: float
    #: Sequential transcripts of the tiny real model per side (in a host, in process).
    isolation_requests: int
    isolation_audio_s: float
    #: Start each real host alone, after its in-process baseline has loaded. Otherwise (quick) the
    #: two start side by side: their ratio stays fair (both share the machine), the absolute
    #: times grow, and the profile saves one stack import per host (45 s for torch here).
    real_start_alone: bool
    #: Start both real hosts under one coordinator too (cold start of the whole config).
    real_hosts_together: bool
    #: Also measure the isolation rows with the env variants of ``realhosts.HOST_ENV_VARIANTS``.
    host_env_variants: bool
    #: Rebuild one env from its lock with a warm uv cache (minutes; the no-op is always measured).
    env_rebuild: bool
    #: Length of the long-form group's recording.
    longform_audio_s: float
    #: Whisper tiny.en with real weights: transcripts per side for throughput, and the ladder of
    #: concurrent real-time streams tried (each step streams the 22 s clip on both sides).
    whisper_requests: int
    whisper_stream_counts: tuple[int, ...]


QUICK = Profile(
    name="quick",
    round_trips=800,
    warmup_round_trips=100,
    pipelined_requests=1500,
    pipeline_window=32,
    rounds=2,
    failover_trials=3,
    stream_counts=(1, 8, 32),
    stream_warmup_s=0.5,
    stream_measure_s=2.5,
    isolation_requests=20,
    isolation_audio_s=2.0,
    real_start_alone=False,
    real_hosts_together=False,
    host_env_variants=False,
    env_rebuild=False,
    longform_audio_s=600.0,
    whisper_requests=8,
    whisper_stream_counts=(1, 2, 4, 8),
)

FULL = Profile(
    name="full",
    round_trips=4_000,
    warmup_round_trips=300,
    pipelined_requests=8_000,
    pipeline_window=32,
    rounds=3,
    failover_trials=10,
    stream_counts=(1, 8, 32, 128),
    stream_warmup_s=2.0,
    stream_measure_s=15.0,
    isolation_requests=100,
    isolation_audio_s=2.0,
    real_start_alone=True,
    real_hosts_together=True,
    host_env_variants=True,
    env_rebuild=True,
    longform_audio_s=3600.0,
    whisper_requests=40,
    whisper_stream_counts=(1, 2, 4, 8, 12, 16, 24),
)
