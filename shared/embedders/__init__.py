"""Text -> vector backends behind one ``Embedder`` protocol.

- ``openai``: the OpenAI embeddings API (``OpenAIEmbedder``), the production default.
- ``local``: all-MiniLM-L6-v2 on the CPU (``LocalEmbedder``), needs ``ingestd[local]``.
- ``hash``: deterministic vectors for tests only (``HashEmbedder``).

Construct by name with ``make_embedder``. Modules are imported on demand so a
worker that embeds with OpenAI never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ingestd.shared.embedders.base import Embedder, EmbeddingUsage, validate_embeddings
from ingestd.shared.embedders.pricing import PRICE_PER_MILLION_TOKENS_USD, cost_usd
from ingestd.shared.errors import ConfigError

# name -> (module, class)
_REGISTRY: dict[str, tuple[str, str]] = {
    "openai": ("ingestd.shared.embedders.openai", "OpenAIEmbedder"),
    "local": ("ingestd.shared.embedders.local", "LocalEmbedder"),
    "hash": ("ingestd.shared.embedders.hashing", "HashEmbedder"),
}


def available_embedders() -> list[str]:
    """Names ``make_embedder`` accepts (whether their dependencies are installed or not)."""
    return sorted(_REGISTRY)


def make_embedder(name: str, **kwargs: Any) -> Embedder:
    """Build the embedder called ``name`` with its constructor's keyword arguments.

    Raises ConfigError for an unknown name or a backend whose dependencies are missing.
    """
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown embedder {name!r}; choose one of {', '.join(available_embedders())}"
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    embedder: Embedder = cls(**kwargs)
    return embedder


__all__ = [
    "PRICE_PER_MILLION_TOKENS_USD",
    "Embedder",
    "EmbeddingUsage",
    "available_embedders",
    "cost_usd",
    "make_embedder",
    "validate_embeddings",
]
