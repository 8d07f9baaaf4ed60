"""Word error rate: how far a transcript is from the text that was spoken.

Used by the speech tests, the demo and the benchmarks to judge real transcripts against the
fixtures' known texts. Standard library only.

Both texts are normalised the same way first, so that only differences a listener would call
errors count: case, punctuation, apostrophes and hyphens are dropped, ``%``/``&``/``$`` become
words, and numbers written with digits become the words a speaker (and espeak-ng) says: ``12``
-> ``twelve``, ``2.5`` -> ``two point five``, ``3rd`` -> ``third``, ``1,200`` -> ``one thousand
two hundred``. Then :func:`word_errors` aligns the word lists with a word-level Levenshtein
distance and counts substitutions, deletions (reference words missing) and insertions (extra
hypothesis words); WER is their sum over the number of reference words.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
#: Cardinal word -> ordinal word, for the irregular ones; the rest add "th" ("-ty" -> "-tieth").
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
#: Numbers this large are read digit by digit (phone numbers, ids), not as a cardinal.
MAX_CARDINAL = 10**12 - 1

_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at "}
# A digit group: 1,200 or 1200 or 3.5, optionally an ordinal suffix.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th)?(?![\w])")
_CURRENCY = re.compile(r"\$\s*(\d[\d,]*(?:\.\d+)?)")
_APOSTROPHES = re.compile(r"['’‘`]")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def cardinal(n: int) -> str:
    """An integer as spoken English words: 1205 -> 'one thousand two hundred five'."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n > MAX_CARDINAL:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return f"{cardinal(high)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable: every n >= 1000 has a scale")


def ordinal(n: int) -> str:
    """An integer as a spoken ordinal: 3 -> 'third', 21 -> 'twenty first', 40 -> 'fortieth'."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _spell_number(match: re.Match[str]) -> str:
    whole, fraction, suffix = match.group(1), match.group(2), match.group(3)
    n = int(whole.replace(",", ""))
    if suffix and not fraction:
        return f" {ordinal(n)} "
    words = cardinal(n)
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction[1:])
    return f" {words} "


def normalize(text: str) -> list[str]:
    """The words of ``text`` as WER compares them (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _CURRENCY.sub(lambda m: f" {m.group(1)} dollars ", text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = _APOSTROPHES.sub("", text)  # "let's" and "lets" are the same word to a listener
    text = _NUMBER.sub(_spell_number, text)
    return _NOT_WORD.sub(" ", text).split()


@dataclasses.dataclass(frozen=True)
class WordErrors:
    """The alignment counts of a hypothesis against a reference, after normalisation."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    hypothesis_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def hits(self) -> int:
        return self.reference_words - self.substitutions - self.deletions

    @property
    def wer(self) -> float:
        """Errors per reference word; an empty reference scores 0.0 if the hypothesis is empty
        too, else infinity (there is no rate of errors against nothing)."""
        if self.reference_words == 0:
            return 0.0 if self.hypothesis_words == 0 else float("inf")
        return self.errors / self.reference_words


def align_words(reference: list[str], hypothesis: list[str]) -> WordErrors:
    """Word-level Levenshtein alignment of two word lists, counting each kind of edit.

    Among alignments with the fewest edits, the one with the most matched words wins (``sat on
    the mat`` against ``sit on mat`` is one substitution and one deletion, not two substitutions
    that skip the matching ``mat``); remaining ties go to substitutions, then deletions, then
    insertions, so the counts are stable.
    """
    rows, cols = len(reference), len(hypothesis)
    # cost[i][j] = (edits, substitutions, deletions, insertions) to turn ref[:i] into hyp[:j]
    previous = [(j, 0, 0, j) for j in range(cols + 1)]
    for i in range(1, rows + 1):
        current = [(i, 0, i, 0)]
        for j in range(1, cols + 1):
            if reference[i - 1] == hypothesis[j - 1]:
                current.append(previous[j - 1])
                continue
            e, s, d, n = previous[j - 1]
            substitute = (e + 1, s + 1, d, n)
            e, s, d, n = previous[j]
            delete = (e + 1, s, d + 1, n)
            e, s, d, n = current[j - 1]
            insert = (e + 1, s, d, n + 1)
            current.append(min(substitute, delete, insert, key=_fewest_edits_most_hits))
        previous = current
    _, s, d, n = previous[cols]
    return WordErrors(s, d, n, rows, cols)


def _fewest_edits_most_hits(cost: tuple[int, int, int, int]) -> tuple[int, int]:
    edits, substitutions, deletions, _ = cost
    return edits, substitutions + deletions  # hits = reference words - substitutions - deletions


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Normalise both texts, then align their words."""
    return align_words(normalize(reference), normalize(hypothesis))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (0.0 is word for word)."""
    return word_errors(reference, hypothesis).wer
