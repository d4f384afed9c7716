"""The OpenAPI description and the router cannot drift apart."""

from __future__ import annotations

import jsonschema_rs

from ingestd.supervisor.http.app import build_app
from ingestd.supervisor.http.openapi import SPEC, routes


def test_router_and_spec_name_the_same_operations(make_settings) -> None:
    app = build_app(make_settings(webhook_secret="s" * 32), url="postgresql://unused/")
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert served == routes()


def test_every_error_is_a_problem_and_v1_routes_declare_bearer_auth() -> None:
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (path, status)
            secured = op["security"] == [{"bearerAuth": []}]
            public = path in ("/healthz", "/readyz", "/v1/webhooks/llamaparse")
            assert secured != public, (method, path)


def test_the_schemas_are_valid_json_schema() -> None:
    for name, schema in SPEC["components"]["schemas"].items():
        jsonschema_rs.Draft202012Validator({**schema, "components": SPEC["components"]})
        assert name
