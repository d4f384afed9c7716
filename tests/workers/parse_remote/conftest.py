"""Fixtures shared with tests/supervisor/http: the HTTP app on a real port, the LlamaParse
emulator."""

from tests.supervisor.http.http_harness import db, http_settings, llamaparse, server

__all__ = ["db", "http_settings", "llamaparse", "server"]
