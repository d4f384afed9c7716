"""Webhook signatures (LlamaCloud v2 ``LC-Signature: sha256=<hex HMAC-SHA256 of the raw body>``).

A webhook endpoint is reachable from the internet, so an unsigned or
mis-signed delivery is refused: a missing header is a failed check, never a
skipped one. ``is_fresh`` bounds how old a (validly signed) delivery may be,
so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import math

SIGNATURE_HEADER = "LC-Signature"
_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The header value a sender with ``secret`` puts on ``body``."""
    _check_secret(secret)
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header_value: str | None, secret: str) -> bool:
    """True only when ``header_value`` carries a valid signature of ``body`` under ``secret``.

    Several comma-separated signatures are accepted (any one valid), as senders
    do while rotating secrets. The comparison is constant-time.
    """
    _check_secret(secret)
    if not header_value:
        return False
    expected = sign(body, secret)[len(_PREFIX) :].encode("ascii")
    valid = False
    for candidate in header_value.split(","):
        scheme, sep, digest = candidate.strip().partition("=")
        if not sep or scheme.strip().lower() != "sha256":
            continue
        try:
            provided = digest.strip().lower().encode("ascii")
        except UnicodeEncodeError:
            continue
        # No early exit: every candidate is compared, whatever the outcome.
        valid |= hmac.compare_digest(expected, provided)
    return valid


def is_fresh(
    timestamp: float | int | str | None,
    now: float,
    max_age_s: float,
    *,
    max_skew_s: float = 60.0,
) -> bool:
    """Whether an event stamped ``timestamp`` (unix seconds) is recent enough to accept.

    Older than ``max_age_s``, more than ``max_skew_s`` in the future, or not a
    number at all: not fresh.
    """
    if timestamp is None or isinstance(timestamp, bool):
        return False
    try:
        stamp = float(timestamp)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(stamp):
        return False
    age = now - stamp
    return -max_skew_s <= age <= max_age_s


def _check_secret(secret: str) -> None:
    if not secret:
        # An empty key would make every forger's HMAC "valid" for a known body.
        raise ValueError("webhook signing secret must not be empty")
