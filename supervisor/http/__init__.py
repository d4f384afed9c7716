"""ingestd's HTTP server, run by the supervisor as a child process.

``build_app`` (the aiohttp application: health, readiness, status, uploads, documents
and the signed LlamaParse webhook) and ``http_main`` (the forked child's entry point).
"""

from ingestd.supervisor.http.app import build_app, http_main, serve

__all__ = ["build_app", "http_main", "serve"]
