"""Hold a reply to the OpenAPI description: its status is declared for the operation, its
Content-Type is the declared one, and its body validates against the declared schema."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema_rs

from ingestd.supervisor.http.openapi import SPEC
from tests.supervisor.http.http_harness import Reply

PROBLEM_JSON = "application/problem+json"


@functools.cache
def _validator(path: str, method: str, status: str, media: str) -> Any:
    declared = SPEC["paths"][path][method]["responses"][status]["content"][media]["schema"]
    return jsonschema_rs.Draft202012Validator({**declared, "components": SPEC["components"]})


def conforms(reply: Reply, method: str, path: str) -> Any:
    """The reply's JSON body, after checking it against ``path``'s ``method`` operation."""
    responses = SPEC["paths"][path][method.lower()]["responses"]
    assert str(reply.status) in responses, f"{reply.status} not declared for {method} {path}"
    media = reply.headers["Content-Type"].split(";")[0].strip()
    declared = responses[str(reply.status)]["content"]
    assert media in declared, f"{media} not declared for {reply.status} of {method} {path}"
    body = json.loads(reply.body)
    _validator(path, method.lower(), str(reply.status), media).validate(body)
    return body


def problem(reply: Reply, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with this status, its correlation id the response header's."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].split(";")[0] == PROBLEM_JSON
    body = json.loads(reply.body)
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    if "X-Correlation-Id" in reply.headers:
        assert body["correlation_id"] == reply.headers["X-Correlation-Id"]
    return body
