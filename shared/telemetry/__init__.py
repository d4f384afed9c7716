"""Observability for every ingestd process.

- ``context``: role/slot of the process, and the document, correlation id and stage
  being worked on (contextvars).
- ``logs``: structured JSON logging with secret and text scrubbing.
- ``metrics``: statsd metrics checked against a documented catalogue.
- ``sentry``: scrubbed error reports, grouped by stage and error class.
- ``scrub``: the rules shared by logs and Sentry (what never leaves the process).

Each process (supervisor, worker, HTTP child) sets all of them up itself, after fork.
"""
