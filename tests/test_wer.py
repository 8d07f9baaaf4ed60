"""Word error rate: normalisation (case, punctuation, numbers as spoken) and the edit counts."""

from __future__ import annotations

import pytest

from orchestrator.speech.wer import (
    WordErrors,
    align_words,
    cardinal,
    normalize,
    ordinal,
    wer,
    word_errors,
)


def words(text: str) -> list[str]:
    """A word list written as one string (only for readability)."""
    return text.split()


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (12, "twelve"),
        (19, "nineteen"),
        (20, "twenty"),
        (42, "forty two"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (1205, "one thousand two hundred five"),
        (2_000_000, "two million"),
        (3_000_000_017, "three billion seventeen"),
        (-4, "minus four"),
        (1_000_000_000_000, "one zero zero zero zero zero zero zero zero zero zero zero zero"),
    ],
)
def test_cardinal_spells_integers_as_spoken(n: int, words: str) -> None:
    assert cardinal(n) == words


@pytest.mark.parametrize(
    ("n", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"),
     (9, "ninth"), (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (40, "fortieth"),
     (100, "one hundredth")],
)  # fmt: skip
def test_ordinal_spells_ordinals_as_spoken(n: int, words: str) -> None:
    assert ordinal(n) == words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("  many   spaces\tand\nlines ", ["many", "spaces", "and", "lines"]),
        ("Let's go", ["lets", "go"]),
        ("Let’s go", ["lets", "go"]),  # typographic apostrophe
        ("follow-up", ["follow", "up"]),
        ("Sales grew by 12%.", ["sales", "grew", "by", "twelve", "percent"]),
        ("12 percent", ["twelve", "percent"]),
        ("the 3rd quarter", ["the", "third", "quarter"]),
        ("on the 21st", ["on", "the", "twenty", "first"]),
        ("1,200 users", ["one", "thousand", "two", "hundred", "users"]),
        ("2.5 hours", ["two", "point", "five", "hours"]),
        ("$5 each", ["five", "dollars", "each"]),
        ("R&D", ["r", "and", "d"]),
        ("twenty-five", ["twenty", "five"]),
        ("25", ["twenty", "five"]),
        ("MP3 files", ["mp3", "files"]),  # digits inside a word are not a number
        ("Ｆｕｌｌｗｉｄｔｈ", ["fullwidth"]),  # NFKC
        ("", []),
        ("...!?", []),
    ],
)
def test_normalize(text: str, words: list[str]) -> None:
    assert normalize(text) == words


def test_identical_texts_score_zero() -> None:
    e = word_errors("We have two open questions.", "we have 2 open questions")
    assert e == WordErrors(0, 0, 0, 5, 5)
    assert e.wer == 0.0 and e.hits == 5


def test_one_substitution() -> None:
    e = word_errors("the final slides by Thursday", "the final size by Thursday")
    assert (e.substitutions, e.deletions, e.insertions) == (1, 0, 0)
    assert e.wer == pytest.approx(1 / 5)


def test_deletions_count_missing_reference_words() -> None:
    e = align_words(words("a b c d"), words("a d"))
    assert (e.substitutions, e.deletions, e.insertions) == (0, 2, 0)
    assert e.wer == 0.5


def test_insertions_count_extra_hypothesis_words() -> None:
    e = align_words(words("a b"), words("a x b y"))
    assert (e.substitutions, e.deletions, e.insertions) == (0, 0, 2)
    assert e.wer == 1.0  # WER can exceed one half with insertions alone; it is not capped


def test_wer_can_exceed_one() -> None:
    assert wer("yes", "no no no") == pytest.approx(3.0)


def test_mixed_edits_are_counted_once_each() -> None:
    # ref: the cat sat on the mat ; hyp: the cat sit on mat today
    e = align_words(words("the cat sat on the mat"), words("the cat sit on mat today"))
    assert e.errors == 3
    assert (e.substitutions, e.deletions, e.insertions) == (1, 1, 1)


def test_ties_prefer_substitutions() -> None:
    e = align_words(["a"], ["b"])
    assert (e.substitutions, e.deletions, e.insertions) == (1, 0, 0)


def test_empty_reference() -> None:
    assert word_errors("", "").wer == 0.0
    assert word_errors("", "hello") == WordErrors(0, 0, 1, 0, 1)
    assert word_errors("...", "hello").wer == float("inf")


def test_empty_hypothesis_deletes_everything() -> None:
    e = word_errors("one two three", "")
    assert e == WordErrors(0, 3, 0, 3, 0) and e.wer == 1.0


def test_a_duplicated_sentence_shows_as_insertions() -> None:
    reference = "first we plan. then we build."
    doubled = "first we plan. first we plan. then we build."
    e = word_errors(reference, doubled)
    assert e.insertions == 3 and e.deletions == 0 and e.substitutions == 0


def test_order_matters() -> None:
    assert wer("a b c", "c b a") == pytest.approx(2 / 3)


def test_long_texts_are_fast_enough_for_tests() -> None:
    ref = " ".join(f"w{i % 50}" for i in range(600))
    hyp = ref.replace("w7 ", "")
    e = word_errors(ref, hyp)
    assert e.deletions == 12 and e.substitutions == 0 and e.insertions == 0
