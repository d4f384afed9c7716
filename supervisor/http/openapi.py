"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /v1/openapi.json``.

Written by hand, next to the code, and held to it by tests: the app's router table and
``ROUTES`` below must name the same (method, path) pairs
(tests/supervisor/http/test_openapi.py), every route test validates the bodies it gets
against these schemas, and schemathesis fuzzes the running server against the whole
description (tests/supervisor/http/test_schemathesis.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ingestd.shared.search import MAX_K
from ingestd.shared.states import Status
from ingestd.supervisor.http.documents import MAX_PAGE
from ingestd.supervisor.http.state import PROBLEM_JSON, json_response

VERSION = "1.0.0"

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}
_STATUS = {"type": "string", "enum": [str(s) for s in Status]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


SCHEMAS: dict[str, Any] = {
    "Problem": {
        **_object(
            {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "correlation_id": {"type": "string"},
            },
            required=["type", "title", "status", "detail"],
        ),
        "description": "RFC 9457 problem details; extension members (e.g. reason,"
        " document_id, retry_after) may follow.",
    },
    "Health": _object({"status": {"const": "ok"}}),
    "Readiness": _object(
        {
            "status": {"const": "ready"},
            "schema_version": {"type": "integer"},
            "workers_alive": {"type": "integer", "minimum": 1},
        }
    ),
    "Status": {
        **_object(
            {
                "documents": {"type": "object", "additionalProperties": {"type": "integer"}},
                "queue": {"type": "object"},
                "throughput": {"type": "object"},
                "workers": {"type": "array", "items": {"type": "object"}},
                "supervisors": {"type": "array", "items": {"type": "object"}},
                "breakers": {"type": "object"},
            }
        ),
        "description": "What `ingestd status --json` prints.",
    },
    "Document": {
        **_object(
            {
                "id": _UUID,
                "source": {"type": "string"},
                "filename": {"type": "string"},
                "mime_type": {"type": "string"},
                "size_bytes": {"type": "integer", "minimum": 0},
                "content_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "correlation_id": _UUID,
                "status": _STATUS,
                "attempts": {"type": "integer", "minimum": 0},
                "run_after": _TIME,
                "lease_owner": _NULLABLE_STRING,
                "lease_expires_at": _NULLABLE_TIME,
                "error_class": _NULLABLE_STRING,
                "error_message": _NULLABLE_STRING,
                "parser": _NULLABLE_STRING,
                "chunker": _NULLABLE_STRING,
                "chunker_version": _NULLABLE_INT,
                "embedding_model": _NULLABLE_STRING,
                "parsed_chars": {"type": "integer", "minimum": 0},
                "pages": _NULLABLE_INT,
                "chunks_total": _NULLABLE_INT,
                "chunks_embedded": {"type": "integer", "minimum": 0},
                "tokens_total": {"type": "integer", "minimum": 0},
                "embed_tokens": {"type": "integer", "minimum": 0},
                "cost_usd": {"type": "number", "minimum": 0},
                "created_at": _TIME,
                "updated_at": _TIME,
                "started_at": _NULLABLE_TIME,
                "completed_at": _NULLABLE_TIME,
            }
        ),
        "description": "Status; progress (chunks_embedded of chunks_total); timings"
        " (created_at, started_at, completed_at, updated_at); tokens (tokens_total,"
        " embed_tokens); cost (cost_usd); the last error (error_class, error_message).",
    },
    "Event": _object(
        {
            "at": _TIME,
            "event": {"type": "string"},
            "stage": _NULLABLE_STRING,
            "from_status": {"type": ["string", "null"]},
            "to_status": {"type": ["string", "null"]},
            "attempt": _NULLABLE_INT,
            "worker": _NULLABLE_STRING,
            "error_class": _NULLABLE_STRING,
            "message": _NULLABLE_STRING,
            "details": {"type": ["object", "null"]},
        }
    ),
    "DocumentView": _object(
        {"document": _ref("Document"), "events": {"type": "array", "items": _ref("Event")}}
    ),
    "DocumentSummary": _object(
        {
            "id": _UUID,
            "filename": {"type": "string"},
            "mime_type": {"type": "string"},
            "size_bytes": {"type": "integer", "minimum": 0},
            "status": _STATUS,
            "attempts": {"type": "integer", "minimum": 0},
            "error_class": _NULLABLE_STRING,
            "chunks_total": _NULLABLE_INT,
            "chunks_embedded": {"type": "integer", "minimum": 0},
            "created_at": _TIME,
            "updated_at": _TIME,
            "completed_at": _NULLABLE_TIME,
        }
    ),
    "DocumentPage": _object(
        {
            "documents": {"type": "array", "items": _ref("DocumentSummary")},
            "next_cursor": {
                **_NULLABLE_STRING,
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
            "next": {**_NULLABLE_STRING, "description": "The next page's path and query."},
        }
    ),
    "Upload": _object(
        {
            "document_id": _UUID,
            "status": _STATUS,
            "created": {"type": "boolean"},
        }
    ),
    "Retried": _object({"document_id": _UUID, "status": {"const": "queued"}}),
    "Deleted": _object({"document_id": _UUID, "deleted": {"const": True}}),
    "SearchHit": _object(
        {
            "document_id": _UUID,
            "filename": {"type": "string"},
            "source": {"type": "string"},
            "ordinal": {"type": "integer", "minimum": 0},
            "heading": _NULLABLE_STRING,
            "distance": {"type": "number"},
            "snippet": {"type": "string"},
        }
    ),
    "SearchResults": _object(
        {
            "query": {"type": "string"},
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
            "results": {"type": "array", "items": _ref("SearchHit")},
        }
    ),
    "WebhookResult": _object(
        {
            "result": {"enum": ["applied", "duplicate", "ignored", "already_handled"]},
            "document_id": _UUID,
            "status": _STATUS,
        },
        required=["result"],
    ),
}


def _json(schema: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        response["headers"] = headers
    return response


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _ref("Problem")}}}


_DOC_ID = {
    "name": "document_id",
    "in": "path",
    "required": True,
    "description": "A document id, or an unambiguous hex prefix of one (8+ characters).",
    "schema": {"type": "string"},
}
_UNAVAILABLE = _problem("The database cannot be reached")
_NOT_FOUND = _problem("No such document")
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "/v1/documents/{id}"}}
_REPLAYED = {
    "Idempotent-Replayed": {
        "schema": {"const": "true"},
        "description": "Present when this is the kept answer to an earlier request with the"
        " same Idempotency-Key",
    }
}


def _op(
    summary: str, responses: dict[str, Any], *, secured: bool = True, **more: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **more}
    op["security"] = [{"bearerAuth": []}] if secured else []
    if secured:
        # supervisor.http.auth answers these on every secured route, before its handler.
        responses.setdefault("401", _UNAUTHENTICATED)
        responses.setdefault("403", _FORBIDDEN)
        responses.setdefault("429", _RATE_LIMITED)
    return op


_UNAUTHENTICATED = {
    **_problem("No token, or one that is wrong, revoked or expired"),
    "headers": {
        "WWW-Authenticate": {
            "schema": {"type": "string"},
            "description": 'Bearer realm="ingestd" (with error="invalid_token" when one was given)',
        }
    },
}
_FORBIDDEN = _problem("The token's scope does not allow this route")
_RATE_LIMITED = {
    **_problem("The token's request rate is used up"),
    "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}},
}


PATHS: dict[str, Any] = {
    "/healthz": {
        "get": _op(
            "Liveness: the process serves",
            {"200": _json("Health", "Serving")},
            secured=False,
            operationId="healthz",
        )
    },
    "/readyz": {
        "get": _op(
            "Readiness: database reachable, schema current, a worker heartbeat fresh",
            {
                "200": _json("Readiness", "Ready"),
                "503": _problem(
                    "Not ready; `reason`, `schema_version` and `workers_alive` say why"
                ),
            },
            secured=False,
            operationId="readyz",
        )
    },
    "/v1/status": {
        "get": _op(
            "Documents by status, queue, throughput, workers (= ingestd status --json)",
            {"200": _json("Status", "The daemon's status"), "503": _UNAVAILABLE},
            operationId="status",
        )
    },
    "/v1/documents": {
        "post": _op(
            "Upload a document (multipart/form-data, field `file`), streamed",
            {
                "201": _json("Upload", "Stored and queued", {**_LOCATION, **_REPLAYED}),
                "200": _json("Upload", "These bytes were already stored", _REPLAYED),
                "400": _problem("No `file` part, a malformed body or Idempotency-Key"),
                "408": _problem("The client stopped sending"),
                "409": _problem("A request with this Idempotency-Key is still in progress"),
                "413": _problem("Larger than max_upload_mb"),
                "415": _problem("Not multipart/form-data"),
                "422": _problem("Empty file, or the Idempotency-Key was used for other bytes"),
                "503": _UNAVAILABLE,
            },
            operationId="uploadDocument",
            parameters=[
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "draft-ietf-httpapi-idempotency-key-header; kept 24 h",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            requestBody={
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                }
                            },
                            "required": ["file"],
                        }
                    }
                },
            },
        ),
        "get": _op(
            "List documents, oldest first, a page at a time (keyset paging)",
            {
                "200": _json(
                    "DocumentPage",
                    "A page",
                    {"Link": {"schema": {"type": "string"}, "description": 'rel="next"'}},
                ),
                "400": _problem("A bad status, limit or cursor"),
                "503": _UNAVAILABLE,
            },
            operationId="listDocuments",
            parameters=[
                {"name": "status", "in": "query", "schema": _STATUS},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "next_cursor of the previous page",
                },
            ],
        ),
    },
    "/v1/documents/{document_id}": {
        "get": _op(
            "One document and its events (= ingestd show --json)",
            {"200": _json("DocumentView", "The document"), "404": _NOT_FOUND, "503": _UNAVAILABLE},
            operationId="getDocument",
            parameters=[_DOC_ID],
        ),
        "delete": _op(
            "Delete a document with its chunks, segments, events and bytes",
            {"200": _json("Deleted", "Deleted"), "404": _NOT_FOUND, "503": _UNAVAILABLE},
            operationId="deleteDocument",
            parameters=[_DOC_ID],
        ),
    },
    "/v1/documents/{document_id}/retry": {
        "post": _op(
            "Requeue a failed or dead document with a fresh attempt budget",
            {
                "200": _json("Retried", "Requeued"),
                "404": _NOT_FOUND,
                "409": _problem("The document is neither failed nor dead"),
                "503": _UNAVAILABLE,
            },
            operationId="retryDocument",
            parameters=[_DOC_ID],
        )
    },
    "/v1/search": {
        "get": _op(
            "The chunks nearest a query",
            {
                "200": _json("SearchResults", "Nearest first"),
                "400": _problem("No query, a query too long, or a bad k"),
                "503": _problem("The database or the embedder cannot answer now"),
            },
            operationId="search",
            parameters=[
                {
                    "name": "q",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 2000},
                },
                {
                    "name": "k",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                },
            ],
        )
    },
    "/v1/openapi.json": {
        "get": _op(
            "This description",
            {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
            operationId="openapi",
        )
    },
    "/v1/webhooks/llamaparse": {
        "post": _op(
            "LlamaParse's signed completion callback (LC-Signature, not a token)",
            {
                "200": _json("WebhookResult", "Applied, a duplicate, ignored or already handled"),
                "400": _problem("Not a LlamaParse event"),
                "401": _problem("Missing or invalid signature, or a stale delivery"),
                "404": _problem("No document has this job"),
                "409": _problem("A worker is polling this job right now"),
                "413": _problem("Body too large"),
                "503": _problem("The result cannot be fetched now, or no database"),
            },
            secured=False,
            operationId="llamaparseWebhook",
            parameters=[
                {"name": "LC-Signature", "in": "header", "schema": {"type": "string"}},
            ],
            requestBody={
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        )
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "ingestd",
        "version": VERSION,
        "description": "Document ingestion into PostgreSQL + pgvector. Every error is"
        " application/problem+json (RFC 9457).",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
    },
}


def routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation described."""
    return {(method.upper(), path) for path, ops in PATHS.items() for method in ops}


async def openapi(_request: web.Request) -> web.Response:
    return json_response(SPEC)
