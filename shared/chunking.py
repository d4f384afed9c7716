"""Token-aware, streaming chunking of Markdown-like text.

The input arrives as blocks of any size (a block may end mid-line). Two stages:

* ``_Lexer`` turns the text into *atoms*: sentence-sized pieces that carry their
  exact token count and the strength of the boundary before them (paragraph,
  line, sentence, word, none) plus heading lines. Every decision it makes looks
  only at the text itself, in windows that start at positions fixed by the
  text, so the atoms (and hence the chunks) do not depend on how the text was
  split into blocks: a resumed document re-chunks identically.
* ``_Packer`` fills chunks with atoms up to ``target_tokens``, cutting at the
  strongest boundary in the second half of the chunk, never mixing sections
  (a heading always starts a chunk), carrying ~``overlap_tokens`` of the end of
  a chunk into the next one of the same section, and prepending the heading
  trail ("Guide > Install") where the chunk does not start with its heading.

Headings are ATX (``#``) lines outside code fences. Chunk text is the source
text with line breaks normalised (runs of blank lines become one) and ends
stripped. Memory is bounded by one chunk of atoms plus one block plus one line
window. Each piece of text is encoded about once, as part of its atom: a chunk's
token count is the sum of its atoms' wherever ``shared.token_joins`` can prove the
joins between them add nothing (or what they add), and only then encoded again.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ingestd.shared.errors import IngestError
from ingestd.shared.token_joins import PUNCT, UNKNOWN, WORD, JoinCounter, kind
from ingestd.shared.tokens import count_tokens, get_encoding

__all__ = ["Chunk", "Chunker"]

# Boundary strengths, weakest first. A heading is stronger than all of them: it
# always starts a new chunk.
_NONE, _WORD, _SENTENCE, _LINE, _PARAGRAPH = range(5)

# A line longer than this is processed in windows of this many characters.
_WINDOW_CHARS = 16384
# Longer lines starting with '#' are text, not headings.
_HEADING_MAX_CHARS = 512
# Per heading title in the trail.
_TITLE_MAX_CHARS = 200
_TRAIL_SEPARATOR = " > "

_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
# A sentence ends after terminal punctuation (and closing quotes/brackets) that
# is followed by whitespace; CJK full stops need no whitespace after them.
# The pattern starts with a character set so that the engine scans ahead for
# candidates (3x faster than a leading lookahead, 6x faster than a bare
# alternation); the lookbehind then picks the branch of the first character's
# script. It matches exactly what ``[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+[\"'”’)\]」』]*``
# does: the two sets are disjoint, and each branch's ``x[set]*`` is ``[set]+``.
_SENTENCE_END = re.compile(
    r"[.!?…。！？](?:(?<=[.!?…])[.!?…]*[\"'”’)\]]*(?=\s)|(?<=[。！？])[。！？]*[\"'”’)\]」』]*)"
)
# Whitespace a window may be cut before (newlines never occur inside a line).
_INLINE_SPACES = " \t\u3000\xa0\f\v"
_TERMINALS = tuple(".!?…。！？\"'”’)]」』")
_LINE_BREAKS = "\r\n"


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    token_count: int
    heading: str | None


@dataclass(slots=True)
class _Atom:
    text: str
    tokens: int
    brk: int
    # Heading lines only: their level, and the titles of the headings above them.
    level: int = 0
    ancestors: tuple[str, ...] = field(default=())
    # False when ``tokens`` is an estimate (a piece of a long line cut at a token
    # boundary): such an atom's chunk is counted by encoding it.
    exact: bool = True
    # The token ids, when the atom was encoded whole: the overlap reuses them.
    ids: list[int] | None = None


# The caches below live as long as the process, not one document: the strings they
# hold (line breaks, heading trails, first words, punctuation before a line break)
# recur across documents, and a chunker is made per document.


@functools.lru_cache(maxsize=1024)
def _count_recurring(text: str) -> int:
    """Tokens of a short string counted over and over (line breaks, trail lines)."""
    return count_tokens(text)


# Longer first words are counted without being cached (bounds the cache's memory).
_WORD_CACHE_CHARS = 32


def _space_cost(word: str) -> int:
    """Tokens of " word" beyond those of "word" (a run of letters)."""
    return count_tokens(" " + word) - count_tokens(word)


_cached_space_cost = functools.lru_cache(maxsize=4096)(_space_cost)


def _first_word_space_cost(word: str) -> int:
    """``_space_cost``, cached for the short words that start most chunks."""
    if len(word) > _WORD_CACHE_CHARS:
        return _space_cost(word)
    return _cached_space_cost(word)


_JOINS = JoinCounter(count_tokens)


class _Tokenizer:
    """Encoding helpers around the cl100k encoding."""

    def __init__(self) -> None:
        self._enc = get_encoding()
        self.count_cached = _count_recurring
        self.joins = _JOINS

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def count_joined(self, atoms: list[_Atom], prefix: str | None) -> int | None:
        """Tokens of the chunk text made of ``atoms`` (and the trail line ``prefix``),
        from the atoms' own counts where every join is known (shared.token_joins);
        None if one is not, and the caller encodes the text."""
        first = atoms[0]
        head = first.text.lstrip()
        last = atoms[-1].text
        if not head or last[-1].isspace() or not all(a.exact for a in atoms):
            return None
        if kind(head[0]) not in (PUNCT, WORD):
            return None
        lead = first.text[: len(first.text) - len(head)]
        if not lead:
            total = first.tokens
        elif lead == " " and (word := _leading_letters(head)):
            # " Word" is one piece, "Word" another, and what follows splits the same.
            total = first.tokens - _first_word_space_cost(word)
        elif lead.strip(_LINE_BREAKS):
            total = self.count(head)
        else:
            # Line breaks before a non-space character are a piece of their own.
            total = first.tokens - self.count_cached(lead)
        for before, atom in itertools.pairwise(atoms):
            extra = self.joins.extra(before.text, atom.text)
            if extra is None:
                return None
            total += atom.tokens + extra
        if prefix:
            # "trail\n" then a non-space character: the same break as above.
            total += self.count_cached(prefix + "\n")
        return total

    def char_cuts(self, text: str, tokens: list[int], token_cuts: list[int]) -> list[int]:
        """Character positions of the token indices ``token_cuts`` (increasing).

        A token boundary inside a multi-byte character moves back to the start
        of that character.
        """
        data = None if text.isascii() else text.encode("utf-8")
        positions: list[int] = []
        chars = byte_pos = token_pos = last = 0
        for cut in token_cuts:
            token_pos += len(self._enc.decode_bytes(tokens[last:cut]))
            last = cut
            if data is None:
                positions.append(token_pos)
                continue
            # Not final: bytes of a character split by the cut wait for the next piece.
            decoded, consumed = codecs.utf_8_decode(data[byte_pos:token_pos], "strict", False)
            chars += len(decoded)
            byte_pos += consumed
            positions.append(chars)
        return positions

    def tail_start(self, text: str, tokens: list[int], index: int) -> int:
        """``char_cuts(text, tokens, [index])[0]``, from the (short) tail's bytes
        where characters are bytes."""
        if text.isascii():
            return len(text) - len(self._enc.decode_bytes(tokens[index:]))
        return self.char_cuts(text, tokens, [index])[0]


@functools.lru_cache(maxsize=16384)
def _token_starts_word(token: int) -> bool:
    return get_encoding().decode_single_token_bytes(token)[:1] in (b" ", b"\t", b"\n")


# A run of letters, found by the regex engine rather than a loop over characters;
# what it matches besides letters is cut off below.
_WORD_CHARS = re.compile(r"[^\W\d_]+")


def _leading_letters(text: str) -> str | None:
    """The run of letters (``\\p{L}+``: str.isalpha) ``text`` starts with, if the
    character after it is known not to be one."""
    match = _WORD_CHARS.match(text)
    end = match.end() if match else 0
    if end and not text[:end].isalpha():
        # \w without digits and "_" also holds a few numeric characters (such as "²").
        end = next(i for i, ch in enumerate(text) if not ch.isalpha())
    if not end or (end < len(text) and kind(text[end]) == UNKNOWN):
        return None
    return text[:end]


def _starts_piece(text: str, pos: int) -> bool:
    """Whether ``text[pos:]`` encodes to the tokens of ``text`` from its token
    boundary ``pos`` on (``pos`` a position ``char_cuts`` returned).

    It does when ``pos`` is also a piece boundary of the pre-tokenizer (see
    shared/token_joins.py): the regex only looks ahead, so the pieces from there
    on are those of ``text[pos:]`` alone. A space or tab after a letter, digit or
    punctuation character is one: the only pieces that hold whitespace after
    another character are whitespace runs, which don't hold that character, and
    punctuation runs, which only take line breaks after them. An ASCII character
    at ``pos`` also means the token boundary was not moved back from inside a
    multi-byte character.
    """
    return 0 < pos < len(text) and text[pos] in " \t" and kind(text[pos - 1]) in (WORD, PUNCT)


class _Lexer:
    """Text blocks -> atoms. See the module docstring for why every decision
    only depends on a fixed window of the text."""

    def __init__(self, tok: _Tokenizer, atom_limit: int) -> None:
        self._tok = tok
        self._limit = atom_limit
        # Text without sentence boundaries is cut into pieces this small, so the
        # packer can still fill a chunk close to its target with them.
        self._group = max(atom_limit // 4, 4)
        self._brk = _PARAGRAPH  # boundary strength before the next atom
        self._newlines = 0  # line breaks before the next atom (blank-line runs count 2)
        self._emitted = False  # no separator before the document's first atom
        self._in_line = False  # the current line is long: already cut into windows
        self._fence = ""  # the open code fence, if any
        self._trail: list[tuple[int, str]] = []

    def atoms(self, blocks: Iterable[str]) -> Iterator[_Atom]:
        # The methods below append a line's (or a window's) atoms to a list rather
        # than yield them one by one through a chain of generators: a line's atoms
        # are few and bounded by the window, and a generator per level and atom
        # cost more than the rest of the lexer's own work.
        rest = ""
        for block in blocks:
            if not block:
                continue
            buf = rest + block if rest else block
            pos = 0
            while (nl := buf.find("\n", pos)) >= 0:
                yield from self._line(buf, pos, nl)
                pos = nl + 1
            # No newline left: a long line must be cut now to bound memory.
            while len(buf) - pos > _WINDOW_CHARS:
                out: list[_Atom] = []
                pos += self._window(buf[pos : pos + _WINDOW_CHARS], out)
                yield from out
            rest = buf[pos:]
        if rest:
            yield from self._line(rest, 0, len(rest))

    # --- lines ----------------------------------------------------------------

    def _line(self, buf: str, start: int, end: int) -> Iterator[_Atom]:
        """The (rest of the) line ``buf[start:end]``, which ends there."""
        out: list[_Atom] = []
        while end - start > _WINDOW_CHARS:
            start += self._window(buf[start : start + _WINDOW_CHARS], out)
            yield from out
            out.clear()
        line = buf[start:end].rstrip()
        long_line, self._in_line = self._in_line, False
        if long_line:
            # Already cut into windows: plain text, whatever it starts with.
            self._text(line, out)
        elif not line:
            self._raise(_PARAGRAPH)
            self._newlines = 2
        else:
            self._short_line(line, out)
        self._raise(_LINE)
        self._newlines = max(self._newlines, 1)
        yield from out

    def _short_line(self, line: str, out: list[_Atom]) -> None:
        if self._fence:
            self._text(line, out)
            closing = line.strip()
            if (
                closing[0] == self._fence[0]
                and closing == closing[0] * len(closing)
                and len(closing) >= len(self._fence)
            ):
                self._fence = ""
                self._raise(_PARAGRAPH)
            return
        if fence := _FENCE.match(line):
            self._fence = fence.group(1)
            self._raise(_PARAGRAPH)
            self._text(line, out)
            return
        if len(line) <= _HEADING_MAX_CHARS and (heading := _HEADING.fullmatch(line)):
            title = heading.group(2).strip()
            if title:
                atom = self._heading(line, len(heading.group(1)), title)
                if atom is not None:
                    out.append(atom)
                    return
        self._text(line, out)

    def _heading(self, line: str, level: int, title: str) -> _Atom | None:
        text = self._separated(line)
        tokens = self._tok.count(text)
        if tokens > self._limit:
            return None  # too long to be a heading: plain text
        ancestors = tuple(t for lvl, t in self._trail if lvl < level)
        if len(title) > _TITLE_MAX_CHARS:
            title = title[:_TITLE_MAX_CHARS] + "…"
        self._trail = [(lvl, t) for lvl, t in self._trail if lvl < level] + [(level, title)]
        self._brk = _NONE
        self._newlines = 0
        self._emitted = True
        return _Atom(text, tokens, _PARAGRAPH, level=level, ancestors=ancestors)

    def heading_trail(self) -> tuple[str, ...]:
        return tuple(t for _, t in self._trail)

    def _window(self, window: str, out: list[_Atom]) -> int:
        """Cut a piece off the start of a long line; returns its length.

        Prefers the last whitespace in the window; without any, cuts at token
        boundaries and keeps the last partial group for the next window.
        """
        self._in_line = True
        cut = max(window.rfind(ch) for ch in _INLINE_SPACES)
        if cut >= 1:
            piece = window[:cut]
            self._text(piece, out)
            self._raise(_SENTENCE if piece.endswith(_TERMINALS) else _WORD)
            return cut
        tokens = self._tok.encode(window)
        token_cuts = list(range(self._group, len(tokens), self._group)) or [len(tokens) - 1]
        start = counted = 0
        for pos, cut in zip(
            self._tok.char_cuts(window, tokens, token_cuts), token_cuts, strict=True
        ):
            if pos > start:
                self._emit(window[start:pos], out, cut - counted)
                start, counted = pos, cut
        if not start:  # cannot happen for a window of thousands of characters
            self._emit(window, out, len(tokens))
            start = len(window)
        return start

    # --- text -------------------------------------------------------------------

    def _raise(self, brk: int) -> None:
        self._brk = max(self._brk, brk)

    def _separated(self, text: str) -> str:
        # Separators are normalised: one newline, or one blank line.
        if self._emitted and self._newlines:
            return "\n" * self._newlines + text
        return text

    def _text(self, piece: str, out: list[_Atom]) -> None:
        start = 0
        for match in _SENTENCE_END.finditer(piece):
            end = match.end()
            if end >= len(piece):
                break
            self._emit(piece[start:end], out)
            if self._brk < _SENTENCE:  # self._raise(_SENTENCE), inlined: once per sentence
                self._brk = _SENTENCE
            start = end
        self._emit(piece[start:], out)

    def _emit(self, text: str, out: list[_Atom], count: int | None = None) -> None:
        """One atom, or several if ``text`` is over the limit. ``count``, when the
        caller already knows about how many tokens the text has, saves encoding
        it again: the packer only needs estimates, chunk counts are exact."""
        if not text or text.isspace():
            return  # whitespace is no content; its boundary stays pending
        # self._separated(text), inlined: once per atom.
        separated = "\n" * self._newlines + text if self._emitted and self._newlines else text
        if count is not None and separated is text and count <= self._limit:
            brk, self._brk, self._newlines, self._emitted = self._brk, _NONE, 0, True
            out.append(_Atom(text, count, brk, exact=False))
            return
        text = separated
        brk, self._brk, self._newlines, self._emitted = self._brk, _NONE, 0, True
        tokens = self._tok.encode(text)
        if len(tokens) <= self._limit:
            out.append(_Atom(text, len(tokens), brk, ids=tokens))
            return
        for index, (part, count) in enumerate(self._split(text, tokens)):
            part_brk = brk if index == 0 else (_WORD if part[:1].isspace() else _NONE)
            out.append(_Atom(part, count, part_brk))

    def _split(self, text: str, tokens: list[int]) -> Iterator[tuple[str, int]]:
        """Split text of more than ``limit`` tokens into groups of about a quarter
        of that: before a word when one starts in the later three quarters of a
        group, else at a token boundary."""
        group = self._group
        token_cuts: list[int] = []
        first = 0
        while len(tokens) - first > group:
            end = first + group
            cut = end
            for j in range(end, first + group // 4, -1):
                if _token_starts_word(tokens[j]):
                    cut = j
                    break
            token_cuts.append(cut)
            first = cut
        begin = 0
        for pos in self._tok.char_cuts(text, tokens, token_cuts):
            if pos > begin:
                yield from self._bounded(text[begin:pos])
                begin = pos
        yield from self._bounded(text[begin:])

    def _bounded(self, part: str) -> Iterator[tuple[str, int]]:
        # A piece cut at a token boundary can encode to a token more on its own.
        tokens = self._tok.encode(part)
        if len(tokens) <= self._limit:
            yield part, len(tokens)
        else:
            yield from self._split(part, tokens)


class _Packer:
    """Atoms -> chunks. Holds at most one chunk's worth of atoms."""

    def __init__(self, chunker: Chunker, tok: _Tokenizer) -> None:
        self._target = chunker.target_tokens
        self._overlap = chunker.overlap_tokens
        self._max = chunker.max_tokens
        self._trail_budget = chunker.target_tokens // 4
        self._tok = tok
        self._ordinal = 0
        self._cur: list[_Atom] = []
        self._cur_tokens = 0
        self._n_overlap = 0  # atoms at the start of _cur copied from the previous chunk
        self._trail: tuple[str, ...] = ()
        self._prefix: str | None = None
        self._budget = 0
        self._prefix_cache: dict[tuple[str, ...], tuple[str | None, int]] = {}

    # --- input ------------------------------------------------------------------

    def heading(self, atom: _Atom, trail: tuple[str, ...]) -> Iterator[Chunk]:
        if any(not a.level for a in self._cur):
            yield from self._flush()
        self._trail = trail
        yield from self.add(atom)

    def add(self, atom: _Atom) -> Sequence[Chunk]:
        """The chunks that ``atom`` completes (usually none)."""
        if self._cur and self._cur_tokens + atom.tokens <= self._budget:
            # Most atoms just fit: no generator, no queue.
            self._cur.append(atom)
            self._cur_tokens += atom.tokens
            return ()
        return list(self._add(atom))

    def _add(self, atom: _Atom) -> Iterator[Chunk]:
        pending = deque([atom])
        while pending:
            item = pending.popleft()
            if not self._cur:
                self._start(item)
            if self._cur_tokens + item.tokens <= self._budget:
                self._append(item)
                continue
            if len(self._cur) == self._n_overlap:
                # The overlap is optional: shed it until the new atom fits.
                while self._cur and self._cur_tokens + item.tokens > self._budget:
                    self._cur_tokens -= self._cur.pop(0).tokens
                    self._n_overlap -= 1
                if not self._cur:
                    self._start(item)
                self._append(item)
                continue
            chunk, carry = self._cut(self._choose_cut(item), overlap=True)
            yield chunk
            pending.extendleft(reversed([*carry, item]))

    def finish(self) -> Iterator[Chunk]:
        yield from self._flush()

    # --- state ------------------------------------------------------------------

    def _start(self, first: _Atom) -> None:
        titles = first.ancestors if first.level else self._trail
        self._prefix, prefix_tokens = self._fit_prefix(titles)
        self._budget = self._target - prefix_tokens

    def _append(self, atom: _Atom) -> None:
        self._cur.append(atom)
        self._cur_tokens += atom.tokens

    def _reset(self, atoms: list[_Atom], n_overlap: int) -> None:
        self._cur = []
        self._cur_tokens = 0
        self._n_overlap = n_overlap
        if atoms:
            self._start(atoms[0])
            for atom in atoms:
                self._append(atom)

    def _fit_prefix(self, titles: tuple[str, ...]) -> tuple[str | None, int]:
        """The trail line for a chunk, within a quarter of the target; its token
        cost counts the newline after it."""
        cached = self._prefix_cache.get(titles)
        if cached is not None:
            return cached
        budget = self._trail_budget
        result: tuple[str | None, int] = (None, 0)
        kept = titles
        while kept:
            text = _TRAIL_SEPARATOR.join(kept)
            cost = self._tok.count(text) + 1
            if cost <= budget:
                result = (text, cost)
                break
            if len(kept) > 1:
                kept = kept[1:]  # the innermost headings matter most
                continue
            low, high = 0, len(text) - 1  # longest cut title that fits
            while low < high:
                mid = (low + high + 1) // 2
                if self._tok.count(text[:mid] + "…") + 1 <= budget:
                    low = mid
                else:
                    high = mid - 1
            if low:
                cut = text[:low] + "…"
                result = (cut, self._tok.count(cut) + 1)
            break
        if len(self._prefix_cache) > 256:
            self._prefix_cache.clear()
        self._prefix_cache[titles] = result
        return result

    # --- cutting ----------------------------------------------------------------

    def _choose_cut(self, incoming: _Atom) -> int:
        """How many atoms of the current chunk to emit, ``incoming`` not fitting.

        The strongest boundary that leaves the chunk at least half full, the
        latest of equals; never right after a heading; else everything.
        """
        cur = self._cur
        n = len(cur)
        half = self._budget // 2
        best, best_key = n, (-1, -1)
        fill = sum(a.tokens for a in cur[: self._n_overlap])
        has_body = False
        for i in range(self._n_overlap + 1, n + 1):
            prev = cur[i - 1]
            fill += prev.tokens
            has_body = has_body or not prev.level
            if fill < half or prev.level or not has_body:
                continue
            strength = cur[i].brk if i < n else incoming.brk
            if (strength, i) > best_key:
                best, best_key = i, (strength, i)
        return best

    def _cut(self, count: int, *, overlap: bool) -> tuple[Chunk, list[_Atom]]:
        """Emit the first ``count`` atoms as a chunk; the rest is returned, and
        the new chunk starts with the overlap."""
        cur, start, prefix = self._cur, 0, self._prefix
        while True:
            body = "".join(a.text for a in cur[start:count]).strip()
            text = f"{prefix}\n{body}" if prefix else body
            tokens = self._tok.count_joined(cur[start:count], prefix)
            if tokens is None:
                tokens = self._tok.count(text)
            if tokens <= self._max:
                break
            # Only possible when target is close to max: BPE merges across atom
            # boundaries can cost a few tokens more than the sum of the parts.
            if count - start > 1 and count - 1 > self._n_overlap:
                count -= 1
            elif start < self._n_overlap:
                start += 1
            elif prefix is not None:
                prefix = None
            else:
                raise IngestError(f"chunker produced an atom of {tokens} tokens (bug)")
        chunk = Chunk(self._ordinal, text, tokens, _TRAIL_SEPARATOR.join(self._trail) or None)
        self._ordinal += 1
        carry = cur[count:]
        kept = self._overlap_atoms(cur[start:count]) if overlap else []
        self._reset(kept, len(kept))
        return chunk, carry

    def _overlap_atoms(self, emitted: list[_Atom]) -> list[_Atom]:
        """About ``overlap_tokens`` from the end of ``emitted``: whole atoms
        (sentences) first, topped up with the last words of the next one back."""
        if not self._overlap:
            return []
        kept: list[_Atom] = []
        total = 0
        for atom in reversed(emitted):
            if atom.level:
                break
            if total + atom.tokens <= self._overlap:
                kept.append(atom)
                total += atom.tokens
                continue
            if total < self._overlap // 2:
                tail = self._suffix(atom, self._overlap - total)
                if tail is not None:
                    kept.append(tail)
            break
        kept.reverse()
        return kept

    def _suffix(self, atom: _Atom, want: int) -> _Atom | None:
        """The last ~``want`` tokens of the atom's text, from the start of a word
        within the first half of them, else from a token boundary."""
        text = atom.text
        tokens = atom.ids if atom.ids is not None else self._tok.encode(text)
        if len(tokens) <= 1:
            return None
        first = max(len(tokens) - want, 1)
        scan = range(first, min(len(tokens), first + max(want // 2, 1)))
        index = next((j for j in scan if _token_starts_word(tokens[j])), first)
        pos = self._tok.tail_start(text, tokens, index)
        tail = text[pos:]
        if not tail or tail.isspace():
            return None
        if _starts_piece(text, pos):
            ids = tokens[index:]
            return _Atom(tail, len(ids), _NONE, ids=ids) if len(ids) <= want else None
        count = self._tok.count(tail)
        return _Atom(tail, count, _NONE) if count <= want else None

    def _flush(self) -> Iterator[Chunk]:
        """Emit everything buffered (end of a section or of the document)."""
        while len(self._cur) > self._n_overlap:
            chunk, carry = self._cut(len(self._cur), overlap=True)
            yield chunk
            # Non-empty only if an oversize chunk was shortened; the rest
            # continues the same section, after the overlap.
            for atom in carry:
                yield from self.add(atom)
        self._reset([], 0)


class Chunker:
    """Splits a stream of Markdown-like text blocks into token-bounded chunks.

    Guarantees: chunks are non-empty, ``token_count == count_tokens(text) <=
    max_tokens``, ordinals count from 0, the chunks cover all non-whitespace
    content in order, and the result depends only on the text, not on how it
    was split into blocks.
    """

    NAME = "ingestd-md"
    VERSION = 1
    MIN_TARGET_TOKENS = 16

    def __init__(
        self, target_tokens: int = 512, overlap_tokens: int = 64, max_tokens: int = 8191
    ) -> None:
        if target_tokens < self.MIN_TARGET_TOKENS:
            raise ValueError(
                f"target_tokens must be at least {self.MIN_TARGET_TOKENS}, got {target_tokens}"
            )
        if not 0 <= overlap_tokens < target_tokens:
            raise ValueError(
                f"overlap_tokens must be >= 0 and < target_tokens ({target_tokens}), "
                f"got {overlap_tokens}"
            )
        if max_tokens < target_tokens:
            raise ValueError(
                f"max_tokens ({max_tokens}) must be >= target_tokens ({target_tokens})"
            )
        self.target_tokens = target_tokens
        self.overlap_tokens = overlap_tokens
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return (
            f"Chunker(target_tokens={self.target_tokens}, overlap_tokens={self.overlap_tokens}, "
            f"max_tokens={self.max_tokens})"
        )

    def chunks(self, blocks: Iterable[str]) -> Iterator[Chunk]:
        """Lazily chunk ``blocks``; ordinals 0, 1, 2, ..."""
        tok = _Tokenizer()
        # Every atom must fit a chunk next to the largest heading-trail prefix.
        atom_limit = self.target_tokens - self.target_tokens // 4
        lexer = _Lexer(tok, atom_limit)
        packer = _Packer(self, tok)
        for atom in lexer.atoms(blocks):
            if atom.level:
                yield from packer.heading(atom, lexer.heading_trail())
            else:
                yield from packer.add(atom)
        yield from packer.finish()
