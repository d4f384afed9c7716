"""What embedding costs, per model ($ per 1M input tokens, list prices)."""

from __future__ import annotations

from types import MappingProxyType

PRICE_PER_MILLION_TOKENS_USD = MappingProxyType(
    {
        "text-embedding-3-small": 0.02,
        "text-embedding-3-large": 0.13,
        "text-embedding-ada-002": 0.10,
        # Local and test models cost nothing per token.
        "all-MiniLM-L6-v2": 0.0,
        "hash": 0.0,
    }
)


def cost_usd(model: str, tokens: int) -> float:
    """Dollars for ``tokens`` input tokens on ``model``; KeyError for an unpriced model."""
    try:
        price = PRICE_PER_MILLION_TOKENS_USD[model]
    except KeyError:
        raise KeyError(f"no price known for embedding model {model!r}") from None
    if tokens < 0:
        raise ValueError("tokens must be >= 0")
    return tokens * price / 1_000_000
