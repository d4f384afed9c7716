"""Chunker: hard guarantees (exact token counts, limits, coverage, block-split
independence, bounded memory) and boundary preferences."""

from __future__ import annotations

import hashlib
import io
import itertools
import random
import string
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest

from ingestd.shared import chunking
from ingestd.shared.chunking import Chunk, Chunker
from ingestd.shared.parsers import TEXT_HTML, iter_blocks
from ingestd.shared.tokens import count_tokens, get_encoding

WORDS = [
    *("the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by"),
    *("at", "from", "this", "be", "it", "are", "an", "or", "which", "but", "not", "system"),
    *("data", "model", "chunk", "token", "vector", "search", "query", "index", "database"),
    *("embedding", "document", "parse", "stream", "memory", "worker", "lease", "retry"),
    *("batch", "request", "limit", "network", "error", "value", "result", "text"),
]


def nonws(text: str) -> str:
    return "".join(text.split())


def body(chunk: Chunk) -> str:
    """Chunk text without the heading-trail line the chunker may prepend."""
    if chunk.heading is not None and not chunk.text.startswith("#"):
        first, _, rest = chunk.text.partition("\n")
        assert first, chunk
        return rest
    return chunk.text


def check(chunker: Chunker, text: str, chunks: list[Chunk]) -> None:
    """Every hard guarantee, plus: the chunks (minus overlap) are the text."""
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip(), c
        assert c.text == c.text.strip()
        assert c.token_count == count_tokens(c.text)
        assert c.token_count <= chunker.max_tokens
    source = nonws(text)
    pos = 0
    for c in chunks:
        piece = nonws(body(c))
        assert piece, c
        # The chunk is an overlap (a suffix of what came before) then new text;
        # take the longest overlap that fits and require new text.
        for overlap in range(min(len(piece) - 1, pos), -1, -1):
            if (
                source.startswith(piece[overlap:], pos)
                and source[pos - overlap : pos] == piece[:overlap]
            ):
                pos += len(piece) - overlap
                break
        else:
            pytest.fail(f"chunk {c.ordinal} does not continue the text at {pos}")
    assert pos == len(source)


def run(chunker: Chunker, blocks: Iterable[str]) -> list[Chunk]:
    return list(chunker.chunks(blocks))


def sentence(rng: random.Random, lo: int = 4, hi: int = 18) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + rng.choice(".....!?")


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def split_randomly(text: str, rng: random.Random, max_block: int) -> list[str]:
    blocks, pos = [], 0
    while pos < len(text):
        size = rng.randint(1, max_block)
        blocks.append(text[pos : pos + size])
        pos += size
    return blocks


def random_document(rng: random.Random, size: int) -> str:
    """Markdown-ish text exercising every path of the lexer."""
    parts: list[str] = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.12:
            part = (
                "#" * rng.randint(1, 6)
                + " "
                + " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 5)))
            )
        elif kind < 0.5:
            part = paragraph(rng, rng.randint(1, 12))
        elif kind < 0.6:
            part = "\n".join("- " + sentence(rng, 2, 8) for _ in range(rng.randint(2, 8)))
        elif kind < 0.66:
            code = "\n".join(
                rng.choice(["# comment, not a heading", "x = 1", "", "    indented()"])
                for _ in range(rng.randint(1, 8))
            )
            part = f"```\n{code}\n```"
        elif kind < 0.72:
            # Longer than the lexer's window, with spaces.
            part = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3000, 6000)))
        elif kind < 0.76:
            # Longer than the window, no whitespace at all.
            part = "".join(rng.choices(string.ascii_letters + "€漢😀", k=rng.randint(500, 30000)))
        elif kind < 0.82:
            part = "".join(
                rng.choice(["漢字の文章です。", "テスト！", "中文句子？", "😀🎉", "数据"])
                for _ in range(rng.randint(5, 300))
            )
        elif kind < 0.86:
            part = "   \t  " + sentence(rng) + "   "  # stray whitespace
        else:
            part = sentence(rng)
        parts.append(part)
        total += len(part)
    separators = ["\n\n", "\n", "\n\n\n", "\r\n\r\n", "\n \n"]
    return "".join(p + rng.choice(separators) for p in parts)


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((512, 512, 8191), "overlap_tokens must be"),
        ((512, -1, 8191), "overlap_tokens must be"),
        ((512, 64, 500), "max_tokens"),
        ((8, 0, 8191), "target_tokens must be at least"),
    ],
)
def test_invalid_settings(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Chunker(*args)


def test_identity() -> None:
    chunker = Chunker()
    assert (Chunker.NAME, Chunker.VERSION) == ("ingestd-md", 1)
    assert (chunker.target_tokens, chunker.overlap_tokens, chunker.max_tokens) == (512, 64, 8191)


# --- basics ---------------------------------------------------------------------------


def test_empty_and_whitespace_give_no_chunks() -> None:
    assert run(Chunker(), []) == []
    assert run(Chunker(), ["", "  \n\n\t", "\r\n"]) == []


def test_short_text_is_one_chunk() -> None:
    chunks = run(Chunker(), ["  Hello world.\n\nSecond paragraph.  \n"])
    assert chunks == [
        Chunk(
            0,
            "Hello world.\n\nSecond paragraph.",
            count_tokens("Hello world.\n\nSecond paragraph."),
            None,
        )
    ]


def test_chunks_are_lazy() -> None:
    consumed = 0
    rng = random.Random(1)

    def blocks() -> Iterator[str]:
        nonlocal consumed
        for _ in range(1000):
            consumed += 1
            yield paragraph(rng, 5) + "\n\n"

    first = next(Chunker(128, 16).chunks(blocks()))
    assert first.ordinal == 0
    assert consumed < 10


# --- structure ------------------------------------------------------------------------


def test_headings_start_chunks_and_trail_is_kept() -> None:
    rng = random.Random(7)
    text = (
        "# Guide\n\nIntro sentence here.\n\n"
        "## Install\n\n" + "\n\n".join(paragraph(rng, 6) for _ in range(12)) + "\n\n"
        "### Linux\n\nUse apt.\n\n"
        "## Use\n\nRun it.\n\n"
        "# Other ###\n\nThe end."
    )
    chunker = Chunker(128, 16)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert chunks[0].text == "# Guide\n\nIntro sentence here."
    assert chunks[0].heading == "Guide"
    install = [c for c in chunks if c.heading == "Guide > Install"]
    assert len(install) > 3
    # The section's first chunk starts with its own heading, under its ancestors.
    assert install[0].text.startswith("Guide\n## Install\n\n")
    # Continuations carry the whole trail as their first line.
    for c in install[1:]:
        assert c.text.startswith("Guide > Install\n")
        assert "#" not in c.text
    linux = [c for c in chunks if c.heading == "Guide > Install > Linux"]
    assert [c.text for c in linux] == ["Guide > Install\n### Linux\n\nUse apt."]
    assert chunks[-2].text == "Guide\n## Use\n\nRun it."
    assert chunks[-1] == Chunk(
        len(chunks) - 1, "# Other ###\n\nThe end.", chunks[-1].token_count, "Other"
    )
    # A chunk never spans two sections.
    for c in chunks:
        lines = body(c).split("\n")
        assert all(not line.startswith("#") for line in lines[1:]), c


def test_consecutive_headings_stay_with_their_body() -> None:
    chunks = run(Chunker(), ["# A\n\n## B\n\nBody of B.\n\n# C\nBody of C."])
    assert [(c.text, c.heading) for c in chunks] == [
        ("# A\n\n## B\n\nBody of B.", "A > B"),
        ("# C\nBody of C.", "C"),
    ]


def test_code_fences_hide_headings() -> None:
    text = "# Real\n\n```bash\n# just a comment\necho hi\n```\n\n~~~\n## also code\n~~~\nafter"
    chunks = run(Chunker(), [text])
    assert len(chunks) == 1
    assert chunks[0].heading == "Real"
    assert chunks[0].text == text


def test_long_titles_are_capped_in_the_trail() -> None:
    title = "T" + "x" * 400
    rng = random.Random(2)
    text = f"# {title}\n\n" + paragraph(rng, 80)
    chunker = Chunker(100, 8)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert chunks[0].text.startswith(f"# {title}\n")
    assert chunks[0].heading == title[:200] + "…"
    for c in chunks[1:]:
        prefix = c.text.partition("\n")[0]
        assert prefix.startswith("Txxx") and prefix.endswith("…")
        assert count_tokens(prefix) + 1 <= 100 // 4


def test_paragraph_boundaries_are_preferred() -> None:
    rng = random.Random(11)
    paragraphs = [paragraph(rng, rng.randint(2, 4)) for _ in range(80)]
    text = "\n\n".join(paragraphs)
    chunker = Chunker(256, 0)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert len(chunks) > 5
    for c in chunks:
        assert all(p in paragraphs for p in c.text.split("\n\n")), c.ordinal
        assert c.token_count <= 256


def test_sentence_boundaries_inside_a_long_paragraph() -> None:
    rng = random.Random(12)
    text = paragraph(rng, 300)
    chunker = Chunker(100, 0)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert len(chunks) > 10
    for c in chunks:
        assert c.text[-1] in ".!?", c.text[-20:]
        assert c.text[0].isupper()
        assert 50 <= c.token_count <= 100 or c is chunks[-1]


def test_overlap_repeats_the_end_of_the_previous_chunk_at_a_boundary() -> None:
    rng = random.Random(13)
    text = "# Doc\n\n" + "\n\n".join(paragraph(rng, 8) for _ in range(20))
    chunker = Chunker(200, 40)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert len(chunks) > 5
    for prev, nxt in itertools.pairwise(chunks):
        start = body(nxt).lstrip()
        overlap = next(k for k in range(len(start), 0, -1) if prev.text.endswith(start[:k]))
        repeated = start[:overlap]
        assert 0 < count_tokens(repeated) <= 40
        # It starts at a word boundary of the previous chunk.
        assert prev.text[-overlap - 1].isspace()
        # Sentence boundary when a whole sentence fits.
        assert repeated[0].isupper()


def test_no_overlap_across_sections() -> None:
    rng = random.Random(14)
    text = "# One\n\n" + paragraph(rng, 30) + "\n\n# Two\n\nShort."
    chunks = run(Chunker(100, 30), [text])
    assert chunks[-1].text == "# Two\n\nShort."


def test_text_without_any_boundary_is_cut_at_token_boundaries() -> None:
    rng = random.Random(15)
    text = "".join(rng.choices(string.ascii_lowercase, k=40_000))
    chunker = Chunker(128, 0, 128)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert "".join(c.text for c in chunks) == text
    assert all(c.token_count >= 64 for c in chunks[:-1])


def test_multibyte_characters_are_never_split() -> None:
    rng = random.Random(16)
    text = "".join(rng.choices("漢字😀🎉é€ab", k=30_000))
    chunker = Chunker(64, 16, 64)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert not any("\ufffd" in c.text for c in chunks)


# --- hard guarantees on random input ------------------------------------------------------


CONFIGS = [(512, 64, 8191), (128, 32, 128), (64, 0, 80), (16, 4, 16), (300, 100, 8191)]


@pytest.mark.parametrize("seed", range(6))
def test_random_documents_keep_every_guarantee(seed: int) -> None:
    rng = random.Random(seed)
    text = random_document(rng, 60_000)
    target, overlap, maximum = CONFIGS[seed % len(CONFIGS)]
    chunker = Chunker(target, overlap, maximum)
    reference = run(chunker, [text])
    check(chunker, text, reference)
    # Same text, other block splits: identical chunks.
    for max_block in (1 + seed * 3, 997, 20_000):
        assert run(chunker, split_randomly(text, rng, max_block)) == reference


def test_block_split_invariance_around_long_lines() -> None:
    rng = random.Random(99)
    long_spaced = " ".join(rng.choice(WORDS) for _ in range(9000))  # ~2.5 windows
    long_solid = "".join(rng.choices(string.ascii_letters, k=50_000))
    text = (
        f"# H\n\n{long_spaced}\n{long_solid}\n\n"
        f"## Tail\n{long_solid[:16384]}\n# {long_spaced[:300]}"
    )
    chunker = Chunker(200, 50)
    reference = run(chunker, [text])
    check(chunker, text, reference)
    window = chunking._WINDOW_CHARS
    for sizes in ([window], [window - 1], [window + 1], [1, window, 7, window * 2]):
        blocks, pos, i = [], 0, 0
        while pos < len(text):
            size = sizes[i % len(sizes)]
            blocks.append(text[pos : pos + size])
            pos += size
            i += 1
        assert run(chunker, blocks) == reference


def test_target_equal_to_max_never_exceeds_it() -> None:
    rng = random.Random(21)
    text = random_document(rng, 40_000)
    chunker = Chunker(32, 8, 32)
    chunks = run(chunker, [text])
    check(chunker, text, chunks)
    assert max(c.token_count for c in chunks) <= 32


# --- memory and work -------------------------------------------------------------------------


def test_a_huge_single_line_without_spaces_chunks_in_bounded_memory() -> None:
    rng = random.Random(31)
    base = "".join(rng.choices(string.ascii_letters + string.digits, k=65536))
    total_blocks = 16  # 1 MB; memory must not depend on it

    def blocks() -> Iterator[str]:
        for n in range(total_blocks):
            cut = (n * 7919) % len(base)
            yield base[cut:] + base[:cut]

    expected = hashlib.sha256()
    for block in blocks():
        expected.update(block.encode())
    chunker = Chunker(512, 0)
    got = hashlib.sha256()
    count = 0
    get_encoding()  # the BPE ranks (~20 MB) are loaded once per process, not per document
    tracemalloc.start()
    try:
        for c in chunker.chunks(blocks()):
            assert c.token_count == count_tokens(c.text) <= 512
            got.update(c.text.encode())
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.hexdigest() == expected.hexdigest()
    assert count > 1000
    assert peak < 700_000 < 65536 * total_blocks


def test_each_character_is_encoded_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded = 0
    real_encode = chunking._Tokenizer.encode
    real_count = chunking._Tokenizer.count

    def encode(self: chunking._Tokenizer, text: str) -> list[int]:
        nonlocal encoded
        encoded += len(text)
        return real_encode(self, text)

    def count(self: chunking._Tokenizer, text: str) -> int:
        nonlocal encoded
        encoded += len(text)
        return real_count(self, text)

    monkeypatch.setattr(chunking._Tokenizer, "encode", encode)
    monkeypatch.setattr(chunking._Tokenizer, "count", count)
    rng = random.Random(41)
    text = "\n\n".join(
        ("## Part\n\n" if i % 20 == 0 else "") + paragraph(rng, rng.randint(1, 10))
        for i in range(1500)
    )
    chunks = run(Chunker(), [text])
    assert len(chunks) > 50
    # Once, as atoms: a chunk's count comes from its atoms' (shared/token_joins.py),
    # plus a few short strings (a first word, trail lines).
    assert encoded < 1.1 * len(text)


def test_parser_output_chunks_identically_whatever_its_block_size() -> None:
    """The parser's block size is an implementation detail; a resumed document
    must get the same chunks."""
    rng = random.Random(51)
    sections = "".join(
        f"<h{level}>Section {n}</h{level}>"
        + "".join(f"<p>{paragraph(rng, 4)}</p>" for _ in range(rng.randint(1, 6)))
        + "<ul>"
        + "".join(f"<li>{sentence(rng)}</li>" for _ in range(3))
        + "</ul>"
        for n, level in enumerate(rng.choice([1, 2, 3]) for _ in range(40))
    )
    data = f"<html><body>{sections}</body></html>".encode()
    chunker = Chunker(128, 24)

    def chunks_for(block_chars: int) -> list[Chunk]:
        blocks = iter_blocks(io.BytesIO(data), TEXT_HTML, block_chars=block_chars)
        return run(chunker, blocks)

    reference = chunks_for(65536)
    assert len(reference) > 20
    assert all(c.heading and c.heading.split(" > ")[-1].startswith("Section") for c in reference)
    assert chunks_for(16) == reference
    assert chunks_for(1000) == reference
