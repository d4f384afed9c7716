"""When is ``len(encode(a + b))`` known from ``len(encode(a))`` and ``len(encode(b))``?

The chunker counts every atom (sentence) once, and a chunk is atoms joined end to
end. Encoding each chunk again only for its count doubled the chunker's tokenizer
time. This module proves, for one join at a time, what the joined count is.

cl100k_base first splits text into pieces with one regular expression, then runs
BPE inside each piece; tokens never span two pieces. So if the join of ``a`` and
``b`` is a piece boundary of ``a + b``, and ``a`` and ``b`` alone split into the
same pieces as they do inside ``a + b``, the counts add up. The pattern (tiktoken's
cl100k, as shipped)::

    '(?i:[sdmt]|ll|ve|re) | [^\\r\\n\\p{L}\\p{N}]?+\\p{L}++ | \\p{N}{1,3}+
    | ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+ | \\s++$ | \\s*[\\r\\n] | \\s+(?!\\S) | \\s

It only looks ahead, never behind, so ``b`` splits alone exactly as it does after
a piece boundary. Which pieces can cross the join depends only on the last
character of ``a`` and the first of ``b``:

* ``a`` ends in a letter or digit, ``b`` starts with whitespace: letter and digit
  pieces stop at whitespace, and whitespace pieces never take a letter before
  them. The counts add up.
* ``a`` ends in punctuation (anything else that is not whitespace), ``b`` starts
  with whitespace other than a line break: the punctuation piece stops there too.
* ``a`` ends in punctuation, ``b`` starts with line breaks then a non-space
  character: the punctuation piece swallows the line breaks (``".\\n\\n"`` is one
  token). Only that piece changes, so the difference is
  ``count(P + N) - count(P) - count(N)`` for the punctuation piece ``P`` and the
  line breaks ``N``. It is cached: in prose there are a handful of them.
* Anything else (whitespace before the join, a non-space after it, as in CJK text
  or cuts at token boundaries) is left to the caller, who encodes the whole.

A character Python's Unicode database doesn't know is never classified, because
the tokenizer's newer tables might call it a letter. ``tests/shared/test_token_joins.py``
checks every case against tiktoken on generated text.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

# ``\s`` of the tokenizer's regex: Unicode White_Space. (Python's str.isspace also
# counts U+001C..U+001F, which the tokenizer does not.)
WHITESPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_LINE_BREAKS = "\r\n"

SPACE, WORD, PUNCT, UNKNOWN = range(4)


@functools.lru_cache(maxsize=4096)
def kind(ch: str) -> int:
    """SPACE, WORD, PUNCT or UNKNOWN (cached: called for the characters around every
    join, and texts use few distinct ones)."""
    if ch in WHITESPACE:
        return SPACE
    category = unicodedata.category(ch)
    if category[0] in "LN":
        return WORD
    if category == "Cn":
        return UNKNOWN
    return PUNCT


class JoinCounter:
    """``extra(a, b)``: tokens of ``a + b`` beyond those of ``a`` and ``b``, or None."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count
        self._merge = functools.lru_cache(maxsize=4096)(self._merge_cost)

    def extra(self, a: str, b: str) -> int | None:
        left, right = kind(a[-1]), kind(b[0])
        if right != SPACE or left in (SPACE, UNKNOWN):
            return None
        if left == WORD or b[0] not in _LINE_BREAKS:
            return 0
        breaks = len(b) - len(b.lstrip(_LINE_BREAKS))
        if breaks == len(b) or kind(b[breaks]) in (SPACE, UNKNOWN):
            return None
        piece = _last_punctuation_piece(a)
        return None if piece is None else self._merge(piece, b[:breaks])

    def _merge_cost(self, piece: str, breaks: str) -> int:
        count = self._count
        return count(piece + breaks) - count(piece) - count(breaks)


def _last_punctuation_piece(text: str) -> str | None:
    """The piece `` ?[^\\s\\p{L}\\p{N}]++`` that ends ``text`` (which ends in
    punctuation): the run of punctuation and one space right before it, if any.
    None if the run meets a character of unknown class."""
    start = len(text) - 1
    while start > 0 and kind(text[start - 1]) == PUNCT:
        start -= 1
    if start == 0:
        return text
    if kind(text[start - 1]) == UNKNOWN:
        return None
    if text[start - 1] == " ":
        start -= 1
    return text[start:]
