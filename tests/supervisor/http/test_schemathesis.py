"""Property-based: schemathesis drives the running server (real socket, real PostgreSQL)
from its own OpenAPI description. No answer may be a 5xx (503 only where declared), every
answer must be declared and match its schema, and every error must be problem+json."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingestd.supervisor.http.openapi import SPEC
from tests.emulators import running
from tests.supervisor.http.http_harness import ADMIN_TOKEN, AppServer

schema = schemathesis.openapi.from_dict(SPEC)


def api_headers() -> dict[str, str]:
    """The fuzzer's requests carry the harness's admin token (stored by the ``db``
    fixture), so every route is reached past authentication."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def fuzzed(make_settings, db_url, db, ingest_bytes):
    ingest_bytes(b"a document the fuzzer can find", "seed.txt")
    settings_ = make_settings(webhook_secret="whsec-fuzz-0123456789abcdef", max_upload_mb=1)
    with running(AppServer(settings_, db_url)) as app:
        yield app


def _problem_json(ctx, response, case) -> bool | None:
    if response.status_code >= 400:
        media = response.headers.get("content-type", [""])[0].split(";")[0]
        assert media == "application/problem+json", (response.status_code, media)
        body = response.json()
        assert body["status"] == response.status_code and body["detail"]
    return None


def _no_server_error(ctx, response, case) -> bool | None:
    # 503 is declared where the database or the embedder may be away; nothing else 5xx.
    assert response.status_code < 500 or response.status_code == 503, response.status_code
    # Nothing here runs a worker, so /readyz is rightly not ready; elsewhere the test
    # database is up and no 503 is expected.
    if case.path != "/readyz":
        assert response.status_code != 503, "the test database is up: no 503 expected"
    return None


CHECKS = [
    _no_server_error,
    _problem_json,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_description(case, fuzzed) -> None:
    case.call_and_validate(base_url=fuzzed.url, headers=api_headers(), checks=CHECKS)
