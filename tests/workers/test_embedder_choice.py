"""Which embedder runs is explicit: refuse to start rather than fall back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingestd.shared.embedders.setup import choose, space_for
from ingestd.shared.errors import ConfigError


def test_run_refuses_to_start_without_a_usable_embedder(cli_env) -> None:
    env = {**cli_env, "INGESTD_EMBEDDER": "openai"}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "run", "--drain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_auto_means_openai_with_a_key_else_local(make_settings) -> None:
    assert choose(make_settings(embedder="auto", openai_api_key="sk-abcdefgh")) == "openai"
    assert choose(make_settings(embedder="auto")) == "local"
    assert space_for(make_settings(embedder="auto")).dimensions == 384
    assert (
        space_for(make_settings(embedder="auto", openai_api_key="sk-abcdefgh")).dimensions == 1536
    )


def test_unknown_openai_model_is_a_configuration_error(make_settings) -> None:
    with pytest.raises(ConfigError, match="not a known OpenAI embedding model"):
        space_for(
            make_settings(
                embedder="openai",
                openai_api_key="sk-abcdefgh",
                embedding_model="text-embedding-4-mega",
            )
        )


def test_reembed_switches_the_space_explicitly(conn, cli_env, make_settings, ingest_bytes) -> None:
    from ingestd.shared.db.space import current_space, ensure_space

    ensure_space(conn, space_for(make_settings()))
    ingest_bytes(b"some text to embed")
    env = {**cli_env, "INGESTD_EMBEDDING_DIMENSIONS": "128"}
    refused = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "reembed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "reembed", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    space = current_space(conn)
    assert space is not None and space.dimensions == 128
