"""The segmenter's VAD on real speech in noise: the default (Silero) beside the energy detector.

Per condition (clean, white/brown/babble at 20 dB SNR; see ``bench/vadeval.py`` for the audio and
the scoring) and per detector: the share of the pauses' frames taken for speech, the sentences
finalised within 1 s of their true end, the longest end-of-sentence -> final delay; and what one
20 ms frame costs each detector. Prints the whole condition x VAD table; the figures (Silero
beside the energy detector, measured in the same run) go to the main table and the JSON.
"""

from __future__ import annotations

import math

from bench import vadeval
from bench.profiles import Profile
from bench.report import Figure, Target

GROUP = "vad"
BASELINE = "energy"


def run(profile: Profile) -> list[Figure]:
    makers = vadeval.detectors()
    scores = [
        vadeval.evaluate(name, make, condition)
        for name, make in makers.items()
        for condition in vadeval.CONDITIONS
    ]
    print("\nVAD on real speech (fixtures/vad), 20 ms chunks through the real segmenter:\n")
    print(vadeval.format_scores(scores) + "\n", flush=True)
    by = {(s.vad, s.condition): s for s in scores}
    figures: list[Figure] = []
    for condition in vadeval.CONDITIONS:
        ours, base = by[("silero", condition)], by[(BASELINE, condition)]
        details = {"scores": [s.to_json() for s in scores if s.condition == condition]}
        figures.append(
            Figure(
                GROUP,
                f"{condition}: false speech frames",
                "%",
                ours.false_frames_pct,
                base.false_frames_pct,
                "energy VAD",
                Target("value", "<=", vadeval.MAX_FALSE_FRAMES_PCT),
                details=details,
            )
        )
        never = math.isinf(base.max_delay_s)
        figures.append(
            Figure(
                GROUP,
                f"{condition}: slowest sentence end -> final ({ours.finalised}/{ours.utterances})",
                "s",
                ours.max_delay_s if not math.isinf(ours.max_delay_s) else None,
                None if never else base.max_delay_s,
                f"energy VAD: {base.finalised}/{base.utterances}"
                + (", others only at max_utterance_s" if never else ""),
                Target("value", "<=", vadeval.MAX_FINAL_DELAY_S),
            )
        )
    # Cost: the same clean stream through each detector, best of the profile's rounds.
    cost = {
        name: min(
            vadeval.evaluate(name, makers[name], "clean").us_per_frame
            for _ in range(profile.rounds)
        )
        for name in ("silero", BASELINE)
    }
    figures.append(
        Figure(
            GROUP,
            "VAD cost per 20 ms frame",
            "s",
            cost["silero"] * 1e-6,
            cost[BASELINE] * 1e-6,
            "energy VAD",
        )
    )
    return figures
