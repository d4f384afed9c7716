"""Parsing a webhook body: whatever arrives, a BadEvent (a 400), never an exception."""

from __future__ import annotations

import json

import pytest

from ingestd.supervisor.http.webhooks import BadEvent, parse_event


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 300_000 + b"]" * 300_000,  # json.loads recursed into a RecursionError (a 500)
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"\xff\xfe not utf-8",
        b"",
        b"[]",
        json.dumps({"event_type": "parse.success", "timestamp": 1, "data": []}).encode(),
    ],
)
def test_a_hostile_or_malformed_body_is_a_bad_event(body: bytes) -> None:
    with pytest.raises(BadEvent):
        parse_event(body)


def test_a_well_formed_event_parses() -> None:
    body = {"event_type": "parse.success", "timestamp": 1.5, "data": {"job_id": "job-1"}}
    event = parse_event(json.dumps(body).encode())
    assert (event.event_type, event.timestamp, event.job_id) == ("parse.success", 1.5, "job-1")
