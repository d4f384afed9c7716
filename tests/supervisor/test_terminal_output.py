"""Outside text reaches the operator's terminal inert: no escape sequence, no markup."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ingestd.supervisor.status import render_document
from ingestd.supervisor.terminal import printable

HOSTILE = "esc\x1b]0;PWNED-TITLE\x07\x1b[2J[bold red]loud[/]\x9b.txt"


def test_printable_shows_every_control_character() -> None:
    assert printable(HOSTILE) == "esc\\x1b]0;PWNED-TITLE\\x07\\x1b[2J[bold red]loud[/]\\x9b.txt"
    assert printable("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


def test_show_prints_a_hostile_name_and_message_inert(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {
        "id": uuid.uuid4(),
        "filename": HOSTILE,
        "mime_type": "text/plain",
        "size_bytes": 3,
        "status": "failed",
        "attempts": 1,
        "correlation_id": uuid.uuid4(),
        "error_class": "invalid_input",
        "error_message": f"cannot parse {HOSTILE}",
        "chunks_embedded": 0,
        "chunks_total": None,
        "tokens_total": 0,
        "embed_tokens": 0,
        "cost_usd": Decimal(0),
    }
    event = {
        "at": datetime(2026, 12, 2, tzinfo=UTC),
        "event": "failed",
        "stage": "parsing",
        "from_status": "parsing",
        "to_status": "failed",
        "attempt": 1,
        "worker": "host:1:0:0",
        "error_class": "invalid_input",
        "message": HOSTILE,
        "details": None,
    }
    render_document(doc, [event])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "esc\\x1b]0;PWNED-TITLE\\x07" in out
    assert "red]loud[/]" in out  # shown as typed (wrapped at 80 columns), not taken as markup
