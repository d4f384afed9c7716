"""Embedding micro-batches: every API limit holds, nothing is lost or reordered."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from ingestd.shared.batching import BatchItem, BatchLimits, batch_weight, item_weight, pack
from ingestd.shared.errors import ErrorClass, InvalidInput
from ingestd.shared.tokens import count_tokens, estimate_api_tokens


def item(key: int, text: str) -> BatchItem:
    return BatchItem(key, text, count_tokens(text))


def check(items: list[BatchItem], batches: list[list[BatchItem]], limits: BatchLimits) -> None:
    assert [i for batch in batches for i in batch] == items  # nothing lost, order kept
    for batch in batches:
        assert 1 <= len(batch) <= limits.max_inputs
        assert batch_weight(batch) <= limits.max_request_tokens
        # What the API itself computes for the per-request cap.
        assert sum(estimate_api_tokens(i.text) for i in batch) <= limits.max_request_tokens
        assert sum(i.token_count for i in batch) <= limits.max_request_tokens
        assert all(i.token_count <= limits.max_input_tokens for i in batch)
    # Greedy: a batch was only closed because the next item did not fit.
    for batch, following in itertools.pairwise(batches):
        nxt = following[0]
        assert (
            len(batch) == limits.max_inputs
            or batch_weight(batch) + item_weight(nxt) > limits.max_request_tokens
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_inputs": 0}, "max_inputs must be at least 1"),
        ({"max_request_tokens": 0}, "max_request_tokens must be at least 1"),
        ({"max_input_tokens": -5}, "max_input_tokens must be at least 1"),
        ({"max_request_tokens": 100, "max_input_tokens": 200}, "must be >= max_input_tokens"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchLimits(**kwargs)


def test_defaults_match_the_api() -> None:
    assert BatchLimits() == BatchLimits(2048, 300_000, 8191)


def test_weight_is_the_larger_of_tokens_and_byte_estimate() -> None:
    ascii_item = item(0, " 9" * 100)  # 200 tokens in 200 bytes: tokens win
    assert item_weight(ascii_item) == ascii_item.token_count > estimate_api_tokens(ascii_item.text)
    emoji_item = item(1, "😀" * 100)  # 400 bytes
    assert item_weight(emoji_item) == max(emoji_item.token_count, 100)
    cjk = item(2, "漢字" * 300)  # 1800 bytes -> estimate 450
    assert item_weight(cjk) == max(cjk.token_count, 450)
    assert batch_weight([ascii_item, emoji_item, cjk]) == sum(
        map(item_weight, [ascii_item, emoji_item, cjk])
    )
    assert batch_weight([]) == 0


def test_empty_input_gives_no_batches() -> None:
    assert list(pack([], BatchLimits())) == []


def test_thousands_of_tiny_items_respect_the_input_cap() -> None:
    items = [BatchItem(n, "x", 1) for n in range(5000)]
    limits = BatchLimits()
    batches = list(pack(items, limits))
    check(items, batches, limits)
    assert [len(b) for b in batches] == [2048, 2048, 904]


def test_items_near_the_token_limit() -> None:
    text = "word " * 8190
    big = BatchItem(0, text, 8191)
    limits = BatchLimits()
    items = [BatchItem(n, text, 8191) for n in range(100)]
    batches = list(pack(items, limits))
    check(items, batches, limits)
    # 8191 tokens but 40950 bytes: the byte estimate (10238) is what counts.
    assert item_weight(big) == estimate_api_tokens(text) == 10238
    assert [len(b) for b in batches] == [29, 29, 29, 13]


def test_multibyte_text_is_weighed_by_bytes() -> None:
    """Text whose bytes far outnumber its tokens: batching by tokens alone would
    send requests the API rejects for their byte-based estimate."""
    dashes = "—" * 2000  # 6000 bytes, ~130 tokens
    tokens = count_tokens(dashes)
    assert estimate_api_tokens(dashes) == 1500 > 10 * tokens
    items = [BatchItem(n, dashes, tokens) for n in range(1000)]
    limits = BatchLimits()
    batches = list(pack(items, limits))
    check(items, batches, limits)
    assert [len(b) for b in batches] == [200] * 5
    russian = "привет мир как дела " * 100  # estimate 900 > 802 tokens
    russian_tokens = count_tokens(russian)
    mixed = [
        BatchItem(n, russian, russian_tokens) if n % 3 else BatchItem(n, dashes, tokens)
        for n in range(2000)
    ]
    check(mixed, list(pack(mixed, limits)), limits)


def test_random_mixtures_never_break_a_limit() -> None:
    rng = random.Random(5)
    pieces = ["a", "word ", "漢字", "😀", "é", "\n", "1234 "]
    for round_ in range(12):
        limits = BatchLimits(
            max_inputs=rng.randint(1, 50),
            max_input_tokens=rng.randint(50, 400),
            max_request_tokens=rng.randint(400, 3000),
        )
        items = []
        for key in range(rng.randint(0, 150)):
            while True:
                text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 300)))
                count = count_tokens(text)
                weight = item_weight(BatchItem(0, text, count))
                if count <= limits.max_input_tokens and weight <= limits.max_request_tokens:
                    break
            items.append(BatchItem(key, text, count))
        check(items, list(pack(items, limits)), limits)
        assert round_ >= 0


def test_pack_is_streaming() -> None:
    produced = 0

    def items() -> Iterator[BatchItem]:
        nonlocal produced
        for n in range(100_000):
            produced += 1
            yield BatchItem(n, "tiny text", 2)

    batches = pack(items(), BatchLimits(max_inputs=10))
    first = next(batches)
    assert [i.key for i in first] == list(range(10))
    assert produced == 11  # one item read ahead, no more


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (BatchItem(7, "", 0), "chunk 7 is empty"),
        (BatchItem(8, "text", 0), "chunk 8 has a token count of 0"),
        (BatchItem(9, "x " * 9000, 9000), "chunk 9 has 9000 tokens, over the per-input limit"),
    ],
)
def test_items_no_request_can_carry_are_invalid_input(bad: BatchItem, message: str) -> None:
    good = [BatchItem(n, "fine", 1) for n in range(3)]
    batches = pack([*good, bad], BatchLimits())
    with pytest.raises(InvalidInput) as info:
        list(batches)
    assert info.value.message.startswith(message)
    assert info.value.error_class is ErrorClass.INVALID_INPUT
    assert "x x" not in str(info.value)  # never the text itself


def test_item_heavier_than_a_whole_request_is_invalid_input() -> None:
    limits = BatchLimits(max_request_tokens=1000, max_input_tokens=1000)
    heavy = BatchItem(3, "—" * 2000, 999)  # 6000 bytes -> estimate 1500
    with pytest.raises(InvalidInput, match="chunk 3 weighs 1500 estimated tokens"):
        list(pack([heavy], limits))
