"""``GET /v1/search?q=…&k=…``: the nearest chunks to a query.

The HTTP child is long-lived, so it keeps the embedder warm: built and loaded on the
first search, off the loop (``HttpState.embedder``). ``ingestd search`` asks this route
over the local Unix socket when the daemon is up, instead of loading a model per call.
"""

from __future__ import annotations

from aiohttp import web

from ingestd.shared.errors import ConfigError, ErrorClass, IngestError
from ingestd.shared.search import MAX_K, nearest, space_ready
from ingestd.shared.telemetry.logs import get_logger
from ingestd.supervisor.http.state import STATE, error_response, json_response

log = get_logger("ingestd.http.search")

MAX_QUERY_CHARS = 2000
DEFAULT_K = 5


async def search(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query.get("q", "")
    if not query.strip():
        return error_response(400, "q (the query text) is required")
    if len(query) > MAX_QUERY_CHARS:
        return error_response(400, f"q is longer than {MAX_QUERY_CHARS} characters")
    raw_k = request.query.get("k", str(DEFAULT_K))
    if not raw_k.isdigit() or not 1 <= int(raw_k) <= MAX_K:
        return error_response(400, f"k must be a whole number from 1 to {MAX_K}")
    k = int(raw_k)
    try:
        if not await state.db(space_ready, state.settings):
            return json_response({"query": query, "k": k, "results": []})
        embedder = await state.embedder()
        vector = (await embedder.embed([query]))[0]
    except ConfigError as exc:
        # The daemon's configuration cannot answer this (another model's vectors, or no
        # embedder installed): the operator's to fix, not the caller's.
        log.warning("search unavailable", error=str(exc))
        state.metrics.incr("search.failed.config")
        return error_response(503, f"search is not available: {exc}")
    except IngestError as exc:
        cls = str(exc.error_class)
        log.warning("cannot embed a search query", error_class=cls, message=exc.message)
        state.metrics.incr(f"search.failed.{cls}")
        status = 400 if exc.error_class is ErrorClass.INVALID_INPUT else 503
        return error_response(status, f"cannot embed the query: {exc.message}", reason=cls)
    hits = await state.db(nearest, vector, k=k)
    return json_response({"query": query, "k": k, "results": hits})
