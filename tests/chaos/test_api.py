"""The embedding API misbehaves: a seeded storm of 429s, 500s, latency spikes and dropped
connections (every document completes); an API gone for good (``run --drain`` exits 3 with
a true one-line reason, nothing is lost, every document stays runnable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingestd.shared.exitcodes import EXIT_UNREACHABLE
from tests.chaos.daemon import API_KEY, Scene
from tests.emulators.openai_api import OpenAIFault
from tests.shared.resilience.test_classify_network import closed_port

pytestmark = [pytest.mark.chaos, pytest.mark.db]

CORPUS = (30, 0)
# Small batches: many requests, so the storm has something to hit.
OPENAI = {
    "INGESTD_EMBEDDER": "openai",
    "INGESTD_EMBEDDING_DIMENSIONS": "256",
    "INGESTD_BATCH_MAX_INPUTS": "16",
}
STORM = {
    OpenAIFault.RATE_LIMIT: 0.15,
    OpenAIFault.SERVER_ERROR: 0.1,
    OpenAIFault.DROP: 0.1,
    OpenAIFault.SLOW: 0.1,
}


def test_a_storm_of_429_500_drops_and_latency_spikes_ends_complete(
    scene: Scene,
    corpus: Path,
    reference: dict[str, int],
    verify: Callable[..., Any],
    openai_emulator: Any,
) -> None:
    openai_emulator.config.api_key = API_KEY
    openai_emulator.config.fault_rates = dict(STORM)
    # The rates roll on every request; a queue in front makes sure each kind is seen.
    for fault in (*STORM, *STORM):
        openai_emulator.inject(fault)
    openai_emulator.config.slow_seconds = 0.5
    openai_emulator.config.forced_retry_after = 0.2
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    env = {**OPENAI, "OPENAI_BASE_URL": openai_emulator.base_url}
    daemon = scene.start(env=env)
    assert daemon.wait() == 0, daemon.tail()
    injected = [r.fault for r in openai_emulator.stats.records if r.fault]
    faults = len(injected)
    assert {str(f) for f in STORM} <= set(injected), injected
    summary = verify(reference, faults=f"{faults} API faults (429/500/drop/slow)")
    assert summary["complete"] == len(reference)


def test_an_api_that_never_recovers_ends_the_drain_with_3_losing_nothing(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    port = closed_port()
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    env = {
        **OPENAI,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "INGESTD_DRAIN_BLOCKED_SECONDS": "1",
    }
    daemon = scene.start(env=env)
    assert daemon.wait() == EXIT_UNREACHABLE, daemon.tail()
    said = [line for line in daemon.tail(200).splitlines() if line.startswith("ingestd: ")]
    assert said and "connection refused" in said[-1] and "stay queued" in said[-1], said
    summary = verify(reference, faults="embedding API refused for good")
    assert summary["unfinished"] == len(reference)  # all still runnable, none lost
    with scene.conn() as c:
        rows = c.execute("SELECT status::text AS s, lease_owner FROM documents").fetchall()
    assert all(r["s"] == "chunked" and r["lease_owner"] is None for r in rows), rows
