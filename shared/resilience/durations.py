"""Parsing the duration formats providers put in rate-limit headers.

OpenAI's ``x-ratelimit-reset-*`` headers are Go ``time.Duration`` strings
(``"1s"``, ``"6m0s"``, ``"120ms"``, ``"1h2m3.5s"``); ``retry-after`` is seconds
or an HTTP date; error messages say "Please try again in 2.812s".
"""

from __future__ import annotations

import email.utils
import math
import re
import time

_GO_UNITS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
# Longest units first so "ms" is not read as "m" followed by garbage.
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)")
_TRY_AGAIN = re.compile(
    r"try again in\s+((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|μs|ns|h|m|s))+)", re.IGNORECASE
)


def parse_go_duration(value: str | None) -> float | None:
    """Seconds in a Go duration string, a bare number of seconds, or None when unparseable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    bare = _parse_number(text)
    if bare is not None:
        return bare
    total = 0.0
    pos = 0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        return None
    return total


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    text = value.strip()
    seconds = _parse_number(text)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def parse_try_again_in(message: str | None) -> float | None:
    """The delay in an OpenAI-style "Please try again in 2.812s" message."""
    if not message:
        return None
    match = _TRY_AGAIN.search(message)
    if match is None:
        return None
    return parse_go_duration(match.group(1))


def _parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number
