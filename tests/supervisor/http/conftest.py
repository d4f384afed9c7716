"""Fixtures: the HTTP app on a real port against the test database, and the LlamaParse
emulator it fetches results from (defined in http_harness, shared with
tests/workers/parse_remote)."""

from tests.supervisor.http.http_harness import db, http_settings, llamaparse, server

__all__ = ["db", "http_settings", "llamaparse", "server"]
