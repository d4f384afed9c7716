"""Fixtures for the telemetry tests (the statsd sink's helpers live beside it)."""

from tests.shared.telemetry.statsd_sink import statsd_server

__all__ = ["statsd_server"]
