"""The chunker's speed-ups that must not change what it computes, checked against
the slower forms they replace and against tiktoken itself."""

from __future__ import annotations

import random
import re

from ingestd.shared import chunking
from ingestd.shared.tokens import count_tokens, get_encoding

# The sentence-end pattern before it was rewritten to start with a character set.
_PLAIN_SENTENCE_END = re.compile(
    r"(?=[.!?…。！？])(?:[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[\"'”’)\]」』]*)"
)

_ALPHABET = [*".!?…。！？\"'”’)]」』", " ", "\t", "\x1c", "\u3000", "\n", "a", "Z", "漢", "9"]


def test_sentence_ends_match_the_plain_pattern() -> None:
    rng = random.Random(3)
    for _ in range(50_000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 14)))
        got = [m.span() for m in chunking._SENTENCE_END.finditer(text)]
        assert got == [m.span() for m in _PLAIN_SENTENCE_END.finditer(text)], text


_PIECES = [
    *"aZé漢9٣.,!?'\"()-…。#",
    "'s",
    "don't",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\xa0",
    "\u3000",
    "\x1c",
    "😀",
    "\u0301",
]


def test_a_tail_from_a_piece_boundary_keeps_its_tokens() -> None:
    """Where ``_starts_piece`` holds, the tail encodes to the tokens after the cut."""
    enc = get_encoding()
    tok = chunking._Tokenizer()
    rng = random.Random(5)
    claimed = 0
    for _ in range(20_000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(2, 16)))
        tokens = enc.encode_ordinary(text)
        for index in range(1, len(tokens)):
            pos = tok.char_cuts(text, tokens, [index])[0]
            if chunking._starts_piece(text, pos):
                claimed += 1
                assert enc.encode_ordinary(text[pos:]) == tokens[index:], (text, index)
    assert claimed > 5_000


def test_space_cost_matches_the_tokenizer() -> None:
    for word in ["Word", "the", "x" * 40, "Élan", "漢字"]:
        expected = count_tokens(" " + word) - count_tokens(word)
        assert chunking._first_word_space_cost(word) == expected


def _plain_leading_letters(text: str) -> str | None:
    """``chunking._leading_letters`` as a loop over characters, before the regex."""
    end = 0
    while end < len(text) and text[end].isalpha():
        end += 1
    if not end or (end < len(text) and chunking.kind(text[end]) == chunking.UNKNOWN):
        return None
    return text[:end]


def test_leading_letters_match_the_plain_loop() -> None:
    # Letters of several kinds, and characters \w holds that are not letters: digits
    # of other scripts, numeric characters ("²", "½"), "_", a combining mark.
    alphabet = [*"abZéßǅʰ漢", "\U00010400", *"²³½_09٣", "\u0301", " ", ".", "\u0378"]
    rng = random.Random(5)
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert chunking._leading_letters(text) == _plain_leading_letters(text), repr(text)
