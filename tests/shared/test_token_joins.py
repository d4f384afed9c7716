"""JoinCounter against tiktoken itself: whenever it claims to know the token count of
a join, the count must be exactly what encoding the joined text gives."""

from __future__ import annotations

import random

import pytest

from ingestd.shared.token_joins import PUNCT, SPACE, UNKNOWN, WORD, JoinCounter, kind
from ingestd.shared.tokens import count_tokens

# Every class the pre-tokenizer distinguishes, and the characters that sit on the
# edges of those classes (contractions, combining marks, separators Python calls
# whitespace and the tokenizer doesn't, CJK, emoji, digits of other scripts).
ALPHABET = [
    *"aeiouxyzAEZ",
    *"éßøİ漢字ナ한",
    *"0123٣½",
    *".,;:!?\"'()[]-—…。、「」*#/\\",
    "'s",
    "'ll",
    "😀",
    "\u0301",
    *" \t\n\r",
    "\r\n",
    "\n\n",
    "  ",
    "\xa0",
    "\u3000",
    "\x1c",
    "\u2028",
]


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def random_join(rng: random.Random) -> tuple[str, str]:
    a = random_text(rng, rng.randint(1, 10))
    if rng.random() < 0.7:  # the joins worth knowing start with whitespace
        return a, rng.choice([" ", "\t", "\n", "\n\n", "\r\n", "\xa0"]) + random_text(
            rng, rng.randint(0, 10)
        )
    return a, random_text(rng, rng.randint(1, 10))


def test_claimed_counts_match_the_tokenizer() -> None:
    rng = random.Random(7)
    joins = JoinCounter(count_tokens)
    outcomes = {"add": 0, "merge": 0, "unknown": 0}
    for _ in range(30_000):
        a, b = random_join(rng)
        extra = joins.extra(a, b)
        if extra is None:
            outcomes["unknown"] += 1
            continue
        outcomes["add" if extra == 0 else "merge"] += 1
        assert count_tokens(a + b) == count_tokens(a) + count_tokens(b) + extra, (a, b)
    # Each way of knowing was exercised, and most joins of random text are left alone.
    assert min(outcomes.values()) > 1000, outcomes


def test_prose_joins_are_known() -> None:
    joins = JoinCounter(count_tokens)
    assert joins.extra("The end.", " Next one") == 0
    assert joins.extra("no stop", "\n\nNext") == 0
    assert joins.extra("(see above)", "\tNext") == 0
    # '.\n\n' is one token: the join saves one.
    assert joins.extra("The end.", "\n\nNext") == count_tokens(".\n\n") - 2 == -1
    assert joins.extra('He said "stop."', "\nNext") == (
        count_tokens('."\n') - count_tokens('."') - count_tokens("\n")
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("end ", "next"),  # whitespace before the join joins the next word
        ("文です。", "次"),  # no whitespace after it: CJK sentence ends
        ("end.", "\n  indented"),  # line breaks, then more whitespace
        ("word", "'s"),
        ("x.", "\n"),  # nothing after the line breaks
    ],
)
def test_unprovable_joins_are_left_to_the_caller(a: str, b: str) -> None:
    assert JoinCounter(count_tokens).extra(a, b) is None


def test_character_classes() -> None:
    assert [kind(c) for c in " \u3000\n"] == [SPACE] * 3
    assert [kind(c) for c in "a漢٣½"] == [WORD] * 4
    # U+001C is whitespace to Python, not to the tokenizer.
    assert [kind(c) for c in ".😀\u0301\x1c"] == [PUNCT] * 4
    assert kind("\U000e0080") == UNKNOWN  # unassigned
