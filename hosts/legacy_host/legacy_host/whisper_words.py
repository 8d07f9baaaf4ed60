"""Words of one transformers Whisper segment, timed from its token timestamps.

transformers 4.57 times each generated token by dynamic time warping over the cross-attention of
the model's alignment heads (``generate(return_token_timestamps=True)``, heads from
``generation_config.alignment_heads``): a segment's ``token_timestamps[i]`` is where token ``i``
ends, in seconds of the whole audio, so token ``i`` spans ``(ts[i-1], ts[i])`` (transformers' own
pipeline reads them the same way). Whisper's byte-level BPE starts a word with a token that begins
with a space; punctuation comes as its own tokens without one, so it stays on its word.

Standard library only: the engine passes plain lists of ids, times and probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: (word text with its leading space, start s, end s, mean token probability)
RawWord = tuple[str, float, float, float]


def segment_words(
    ids: Sequence[int],
    ends_s: Sequence[float],
    probabilities: Sequence[float],
    *,
    first_special_id: int,
    decode: Callable[[list[int]], str],
) -> list[RawWord]:
    """Group one segment's tokens into words, for :func:`orchestrator.host.engine.timed_words`.

    ``ids[0]`` is the segment's opening timestamp token, whose time is where speech may start.
    Ids from ``first_special_id`` on (end of text, timestamps, language and task tokens) are no
    text: they close nothing and start nothing. A word ends where its last token with a letter or
    digit ends: DTW often places a trailing full stop in the pause after the sentence, and a word
    stretched over that pause would claim silence.
    """
    words: list[RawWord] = []
    group: list[int] = []  # indices into ids of the word being read

    def close() -> None:
        if not group:
            return
        text = decode([ids[i] for i in group])
        spoken = [i for i in group if any(ch.isalnum() for ch in decode([ids[i]]))] or group
        start = ends_s[group[0] - 1] if group[0] > 0 else ends_s[0]
        mean_p = sum(probabilities[i] for i in group) / len(group)
        words.append((text, float(start), float(ends_s[spoken[-1]]), mean_p))
        group.clear()

    for i, token in enumerate(ids):
        if token >= first_special_id:
            close()
            continue
        if decode([token]).startswith(" "):
            close()
        group.append(i)
    close()
    return words
