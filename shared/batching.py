"""Token-budgeted micro-batches for the embeddings API.

The API enforces three limits per request: the number of inputs, the tokens of
each input (real tokens), and the tokens summed over the request, which it
judges by a byte-based *estimate* (0.25 per UTF-8 byte). Text whose bytes far
outnumber its tokens (CJK, emoji) is therefore heavier than its token count
says, so each input weighs ``max(real tokens, estimate)`` against the request
cap.

A rate-limited sender can also say how much a request may carry *now*
(``room``, e.g. the embedder's rate-limit bucket): a batch that would not fit in
what remains of the window is closed early and sent, instead of being held whole
until the bucket refills, or overdrawing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ingestd.shared.errors import InvalidInput
from ingestd.shared.tokens import estimate_api_tokens

__all__ = ["BatchItem", "BatchLimits", "batch_weight", "item_weight", "pack"]


@dataclass(frozen=True)
class BatchItem:
    key: Any  # the chunk's identity: its ordinal, or (document, ordinal) in a group
    text: str
    token_count: int


@dataclass(frozen=True)
class BatchLimits:
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    max_input_tokens: int = 8191

    def __post_init__(self) -> None:
        for name in ("max_inputs", "max_request_tokens", "max_input_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_request_tokens < self.max_input_tokens:
            raise ValueError(
                f"max_request_tokens ({self.max_request_tokens}) must be >= "
                f"max_input_tokens ({self.max_input_tokens})"
            )


def item_weight(item: BatchItem) -> int:
    """What one input costs against the request's token cap."""
    return max(item.token_count, estimate_api_tokens(item.text))


def batch_weight(batch: Iterable[BatchItem]) -> int:
    return sum(item_weight(item) for item in batch)


def _check(item: BatchItem, weight: int, limits: BatchLimits) -> None:
    if not item.text:
        raise InvalidInput(f"chunk {item.key} is empty")
    if item.token_count < 1:
        raise InvalidInput(f"chunk {item.key} has a token count of {item.token_count}")
    if item.token_count > limits.max_input_tokens:
        raise InvalidInput(
            f"chunk {item.key} has {item.token_count} tokens, over the per-input limit "
            f"of {limits.max_input_tokens}"
        )
    if weight > limits.max_request_tokens:
        raise InvalidInput(
            f"chunk {item.key} weighs {weight} estimated tokens, over the per-request limit "
            f"of {limits.max_request_tokens}"
        )


def pack(
    items: Iterable[BatchItem],
    limits: BatchLimits,
    room: Callable[[], int | None] | None = None,
) -> Iterator[list[BatchItem]]:
    """Group ``items`` in order into requests that respect every limit.

    Streaming: at most one batch is held. A batch is closed when the next item
    would break the input count or the request weight; with ``room``, also when
    it would make the batch heavier than ``room()`` (asked once per batch, when
    its first item arrives; None: no such bound). Raises InvalidInput for an item
    that no request could carry (empty, or over a limit on its own).
    """
    batch: list[BatchItem] = []
    weight = 0
    cap = limits.max_request_tokens
    for item in items:
        item_cost = item_weight(item)
        _check(item, item_cost, limits)
        if batch and (len(batch) >= limits.max_inputs or weight + item_cost > cap):
            yield batch
            batch, weight = [], 0
        if not batch:
            cap = _cap(limits, room)
        batch.append(item)
        weight += item_cost
    if batch:
        yield batch


def _cap(limits: BatchLimits, room: Callable[[], int | None] | None) -> int:
    now = room() if room is not None else None
    return limits.max_request_tokens if now is None else min(limits.max_request_tokens, now)
