"""Every error the HTTP API answers is ``application/problem+json`` (RFC 9457).

Handlers answer with ``state.error_response``. Two other sources of errors are
converted here:

- ``web.HTTPException`` that aiohttp raises before or around a handler (no route: 404;
  a route without that method: 405, with ``Allow``; a body over ``client_max_size``:
  413), turned into a problem by the request middleware in ``app``;
- requests aiohttp's parser refuses before any application code runs (a malformed
  request line or header: 400; headers too long: 431): ``aiohttp.web_protocol``
  answers those as text/plain from ``RequestHandler.handle_error``, so the server is
  built with a handler class that answers them as problems too (``ApiRunner``).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ingestd.shared.telemetry import context
from ingestd.supervisor.http.state import error_response

# Headers of an HTTPException that describe its text body, not the error.
_BODY_HEADERS = frozenset({"content-type", "content-length"})
_MAX_DETAIL = 200


def from_http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    """The problem that says what aiohttp's exception said, with its headers (Allow…)."""
    detail = _detail(exc, request)
    response = error_response(exc.status, detail)
    for name, value in exc.headers.items():
        if name.lower() not in _BODY_HEADERS:
            response.headers.add(name, value)
    return response


def _detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such resource: {request.path[:_MAX_DETAIL]}"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed here; allowed: {allowed}"
    text = (exc.text or "").strip()
    # aiohttp's default body is "<status>: <reason>", which says nothing the title does not.
    if not text or text == f"{exc.status}: {exc.reason}":
        return exc.reason
    return text.splitlines()[0][:_MAX_DETAIL]


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, but its own error answers are problems."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The base class logs, and refuses when part of a response already went out.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            detail = "internal error"  # never a traceback
        else:
            first = (message or HTTPStatus(status).phrase).strip().splitlines()
            detail = f"malformed HTTP request: {first[0][:_MAX_DETAIL] if first else ''}"
        with context.bind_correlation(context.new_correlation_id()):
            response = error_response(status, detail)
        response.force_close()
        return response


class ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer malformed requests as problems."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return ProblemServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **_handler_kwargs(base),
        )


def _handler_kwargs(server: web.Server) -> dict[str, Any]:
    kwargs: dict[str, Any] = server._kwargs
    return kwargs
