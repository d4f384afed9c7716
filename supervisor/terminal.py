"""Text from the outside world as a terminal may show it.

File names, error messages and chunk text come from documents and their senders. Printed
raw, an escape sequence in a file name retitles or clears the operator's terminal, and a
``[bold]`` in one is taken as rich markup. Every such value goes through here on its way
to a terminal (JSON output needs nothing: its encoder escapes control characters).
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls but tab and newline, DEL and the C1 controls (ESC's 8-bit forms).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` with each control character shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def markup_safe(value: object) -> str:
    """``printable``, and escaped for rich's markup."""
    return escape(printable(value))
