"""What must never leave the process in a log line or an error report, and how it is removed.

Two kinds of data are kept out:

- secrets: values registered with ``register_secret`` (API keys, webhook secrets,
  DSNs; ``register_settings_secrets`` registers a configuration's) wherever they
  appear inside a string, and any value under a key that is named like a secret
  (``api_key``, ``Authorization``, ``password``, ``*_token``…).
  ``token_count``/``prompt_tokens`` are counts, not secrets, and are kept.
- document and chunk text: a value under a key named ``text``, ``content``,
  ``body``, ``payload``, ``input``… is replaced by its size, whatever it holds.

Both log rendering (``logs``) and Sentry's ``before_send`` (``sentry``) use these
functions, so the rules are the same everywhere.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from ingestd.shared.settings import Settings

REDACTED = "[REDACTED]"

# Shorter values would mask ordinary words all over the logs; real keys are far longer.
MIN_SECRET_LENGTH = 6

_SECRET_WORDS = frozenset(
    {
        "secret",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "apikey",
        "dsn",
        "signature",
    }
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key")})
TEXT_KEYS = frozenset(
    {"text", "content", "body", "payload", "input", "inputs", "chunk_text", "markdown"}
)

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Never show ``value`` again: masked wherever it occurs in a logged or reported string."""
    global _secrets, _secret_pattern
    if not isinstance(value, str):
        raise TypeError(f"a secret must be a str, got {type(value).__name__}")
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"refusing to register a secret shorter than {MIN_SECRET_LENGTH} characters: "
            "masking it would garble unrelated text"
        )
    with _lock:
        secrets = _secrets | {value}
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(secrets, key=len, reverse=True)
        _secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))
        _secrets = secrets


def register_settings_secrets(settings: Settings) -> None:
    """Register the secrets a configuration holds; every process calls this once its
    logging is set up, and the supervisor again on each reload."""
    for secret in (settings.openai_api_key, settings.llama_cloud_api_key, settings.webhook_secret):
        if secret is not None:
            register_secret(secret.get_secret_value())


def registered_secrets() -> frozenset[str]:
    return _secrets


def clear_secrets() -> None:
    """Forget every registered secret (tests only)."""
    global _secrets, _secret_pattern
    with _lock:
        _secrets, _secret_pattern = frozenset(), None


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD_SPLIT.split(key) if w]


def is_secret_key(key: str) -> bool:
    words = _words(key)
    if not words:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    if any(pair in _SECRET_PAIRS for pair in pairwise(words)):
        return True
    # token, access_token, csrftoken: the last word names what the value is.
    # token_count, prompt_tokens, max_tokens do not end in "token".
    return words[-1].endswith("token")


def is_text_key(key: str) -> bool:
    return key.lower() in TEXT_KEYS


_WITHHELD_RE = re.compile(r"\[withheld: [^\]]*\]")


def withheld(value: Any) -> str:
    """What stands in for text that must not be logged: its size only. Idempotent, so
    scrubbing twice (breadcrumb, then event) keeps the original size."""
    if isinstance(value, str) and _WITHHELD_RE.fullmatch(value):
        return value
    if isinstance(value, str):
        return f"[withheld: {len(value)} chars]"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[withheld: {len(value)} bytes]"
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return f"[withheld: {len(value)} items]"
    return f"[withheld: {type(value).__name__}]"


def scrub_string(value: str, max_chars: int | None = None) -> str:
    pattern = _secret_pattern
    if pattern is not None:
        value = pattern.sub(REDACTED, value)
    if max_chars is not None and len(value) > max_chars:
        value = f"{value[:max_chars]}…[truncated {len(value) - max_chars} chars]"
    return value


def scrub_value(value: Any, *, max_chars: int | None = None, depth: int = 6) -> Any:
    """Scrub secrets and text out of ``value``, recursing into mappings and sequences.

    Returns new containers; the input is never modified.
    """
    if isinstance(value, str):
        return scrub_string(value, max_chars)
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw bytes in a log or report are a payload by construction.
        return withheld(value)
    if depth <= 0:
        return value if isinstance(value, int | float | bool | type(None)) else "[too deep]"
    if isinstance(value, Mapping):
        return scrub_mapping(value, max_chars=max_chars, depth=depth - 1)
    if isinstance(value, list | tuple):
        return [scrub_value(v, max_chars=max_chars, depth=depth - 1) for v in value]
    return value


def scrub_mapping(
    mapping: Mapping[Any, Any], *, max_chars: int | None = None, depth: int = 6
) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        name = str(key)
        if is_secret_key(name):
            out[key] = None if value is None else REDACTED
        elif is_text_key(name):
            out[key] = None if value is None else withheld(value)
        else:
            out[key] = scrub_value(value, max_chars=max_chars, depth=depth)
    return out
