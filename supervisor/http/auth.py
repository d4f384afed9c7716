"""Who may call which route: API tokens, scopes, and the webhook-only listener.

``ACCESS`` is the one table of the rule: each route (method, path pattern) is open (the
probes, and the OpenAPI description), signed (the LlamaParse webhook, which checks its
own HMAC signature), or needs a token of at least a scope. ``authorize`` enforces it:

- a route missing from the table is refused to every token (default deny; a test checks
  that every registered route has an entry), and so is any ``/v1`` path to a caller
  without a valid token, even one that matches no route (no probing of what exists);
- a missing, malformed, unknown, wrong, revoked or expired token answers 401 with
  ``WWW-Authenticate: Bearer realm="ingestd"`` (plus ``error="invalid_token"`` when a
  token was given); a scope too low for the route answers 403;
- each token's requests pass a token bucket (429 + ``Retry-After``) and its uploads its
  own size cap (413);
- below admin scope, responses lose what only an operator needs (``exposure``);
- on the webhook-only listener, everything but the webhook answers 404.

``GET /v1/openapi.json`` is open: it is the same for every installation (generated from
the code, it names no host, path or setting), and clients read it to learn how to
authenticate before they have a token.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import psycopg
from aiohttp import web
from aiohttp.web_urldispatcher import SystemRoute
from psycopg_pool import PoolTimeout

from ingestd.shared.db import tokens as db_tokens
from ingestd.shared.db.tokens import LAST_USED_RESOLUTION_SECONDS, TokenRow
from ingestd.shared.errors import ConfigError
from ingestd.shared.telemetry.logs import get_logger
from ingestd.supervisor.http import exposure
from ingestd.supervisor.http.limits import GUARD, WEBHOOK, RateLimiter, too_many_requests
from ingestd.supervisor.http.state import STATE, HttpState, error_response, is_local_socket
from ingestd.supervisor.tokens import Refusal, Scope, check

log = get_logger("ingestd.http")

REALM = 'Bearer realm="ingestd"'
# Boundaries and part headers around an upload: what a Content-Length may exceed a
# token's size cap by before it is refused unread (as in uploads).
MULTIPART_ALLOWANCE = 64 * 1024


class Access(Enum):
    OPEN = "open"
    SIGNED = "signed"  # the handler checks the request's signature
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    @property
    def scope(self) -> Scope | None:
        return Scope.parse(self.value) if self in _SCOPED else None


_SCOPED = frozenset({Access.READ, Access.WRITE, Access.ADMIN})

WEBHOOK_ROUTE = ("POST", "/v1/webhooks/llamaparse")

# The rule, in one place. HEAD is looked up as GET.
ACCESS: dict[tuple[str, str], Access] = {
    ("GET", "/healthz"): Access.OPEN,
    ("GET", "/readyz"): Access.OPEN,
    ("GET", "/v1/openapi.json"): Access.OPEN,
    WEBHOOK_ROUTE: Access.SIGNED,
    ("GET", "/v1/status"): Access.READ,  # details (hosts, pids, paths) for admin only
    ("GET", "/v1/documents"): Access.READ,
    ("GET", "/v1/documents/{document_id}"): Access.READ,  # server paths for admin only
    ("GET", "/v1/search"): Access.READ,
    ("POST", "/v1/documents"): Access.WRITE,
    ("POST", "/v1/documents/{document_id}/retry"): Access.WRITE,
    ("DELETE", "/v1/documents/{document_id}"): Access.ADMIN,
}

TOKEN: web.RequestKey[TokenRow] = web.RequestKey("ingestd_token", TokenRow)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("ingestd_rate_limiter", RateLimiter)


def route_key(request: web.BaseRequest) -> tuple[str, str] | None:
    """(method, path pattern) of the route the request matched; None when none did."""
    route = request.match_info.route
    if isinstance(route, SystemRoute) or route.resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, route.resource.canonical


@web.middleware
async def authorize(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    key = route_key(request)
    rule = ACCESS.get(key) if key else None
    if request.app[GUARD].listener_of(request) == WEBHOOK and key != WEBHOOK_ROUTE:
        return error_response(404, "not found")
    if rule in (Access.OPEN, Access.SIGNED) or (key is None and not _under_v1(request)):
        return await handler(request)
    if is_local_socket(request):
        # The socket file (0600, the daemon's user) is the credential: the local CLI is
        # the operator. A route without an access rule stays refused even here.
        if key is not None and rule is None:
            return _forbidden(request.app[STATE], "this route has no access rule")
        return await handler(request)
    state = request.app[STATE]
    token = await _authenticate(request, state)
    if isinstance(token, web.Response):
        return token
    wait = request.app[LIMITER].take(token.id)
    if wait > 0:
        state.metrics.incr("http.refused.rate_limited")
        return too_many_requests(wait)
    if key is None:
        return await handler(request)  # aiohttp's 404 or 405, for a caller we know
    if rule is None:
        log.error("route has no access rule; refused", method=key[0], route=key[1])
        return _forbidden(state, "this route has no access rule")
    needed = rule.scope
    assert needed is not None
    if Scope.parse(token.scope) < needed:
        return _forbidden(
            state, f"a {token.scope} token cannot {key[0]} {key[1]}", required_scope=str(needed)
        )
    request[TOKEN] = token
    if key == ("POST", "/v1/documents") and token.max_upload_mb is not None:
        # The server's own cap is the upload handler's; a token's lower one is checked here
        # when the length is declared, and by the handler (upload_limit_mb) as it streams.
        limit_mb = upload_limit_mb(request)
        if (
            request.content_length is not None
            and request.content_length > limit_mb * 2**20 + MULTIPART_ALLOWANCE
        ):
            return too_large(limit_mb)
    response = await handler(request)
    if Scope.parse(token.scope) < Scope.ADMIN:
        exposure.redact(response)
    return response


def _under_v1(request: web.BaseRequest) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


def _forbidden(state: HttpState, message: str, **extra: Any) -> web.Response:
    state.metrics.incr("http.refused.forbidden")
    return error_response(403, message, **extra)


async def _authenticate(request: web.Request, state: HttpState) -> TokenRow | web.Response:
    header = request.headers.get("Authorization")
    if header is None:
        return _unauthorized(state, "this route needs an API token: Authorization: Bearer …")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _unauthorized(state, "send the API token as Authorization: Bearer …", given=True)
    found = await state.db(check, presented.strip())
    if isinstance(found, Refusal):
        # Told apart in the log, never to the client.
        log.info("api token refused", reason=found.name.lower())
        return _unauthorized(state, "the API token is invalid, revoked or expired", given=True)
    await _record_use(state, found.id)
    return found


# When this process last recorded each token's use (per process: each HTTP child, on each
# host, writes at most once a minute per token).
_last_touch: dict[str, float] = {}


async def _record_use(state: HttpState, token_id: str) -> None:
    """last_used_at, at most once a minute per token (the SQL holds the same bound
    across processes): not a write on every request."""
    now = time.monotonic()
    last = _last_touch.get(token_id)
    if last is not None and now - last < LAST_USED_RESOLUTION_SECONDS:
        return
    _last_touch[token_id] = now
    await state.db(db_tokens.touch, token_id)


def _unauthorized(state: HttpState, message: str, *, given: bool = False) -> web.Response:
    state.metrics.incr("http.refused.unauthenticated")
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = REALM + (', error="invalid_token"' if given else "")
    return response


def caller(request: web.Request) -> str:
    """Who is asking, for state kept per caller (Idempotency-Key): the token's id, or
    ``local`` for the operator on the local socket."""
    token = request.get(TOKEN)
    return f"token:{token.id}" if token is not None else "local"


def upload_limit_mb(request: web.Request) -> int:
    """The largest upload this request may send: the server's cap, or its token's if lower."""
    server = request.app[STATE].settings.max_upload_mb
    token = request.get(TOKEN)
    own = token.max_upload_mb if token is not None else None
    return min(server, own) if own is not None else server


def too_large(max_mb: int) -> web.Response:
    response = error_response(413, f"the file is larger than this token's limit ({max_mb} MiB)")
    # Close instead of reading and discarding the rest of a huge body.
    response.force_close()
    return response


# -- start-up -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


async def refuse_open_exposure(state: HttpState) -> None:
    """A listener others can reach, and no token to call it with, is a mistake: stop
    with a message that says what to do (ConfigError: the daemon stops)."""
    host = state.settings.http_host
    if is_loopback(host):
        return
    try:
        live = await state.db(db_tokens.live_count)
    except (PoolTimeout, psycopg.OperationalError) as exc:
        # Fail closed, not open: without the database no token is accepted either.
        log.warning(
            "cannot check for API tokens: database unreachable; every /v1 request is refused"
            " until it is",
            error=type(exc).__name__,
        )
        return
    if live == 0:
        raise ConfigError(
            f"the HTTP API listens on {host}, beyond this host, and no API token exists:"
            " create one (ingestd token create --name NAME --scope write), or set http_host"
            " to 127.0.0.1"
        )
