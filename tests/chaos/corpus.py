"""A reproducible corpus of small mixed documents, plus a few over 1 MiB."""

from __future__ import annotations

import random
from pathlib import Path

LARGE_BYTES = 1_200_000
_WORDS = [
    "ledger",
    "queue",
    "lease",
    "vector",
    "chunk",
    "worker",
    "supervisor",
    "outage",
    "retry",
    "parser",
    "token",
    "embedding",
    "postgres",
    "recovery",
    "invariant",
    "document",
    "pipeline",
    "heartbeat",
    "backoff",
]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    return [" ".join(_sentence(rng) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def write_corpus(root: Path, *, documents: int, large: int, seed: int = 16) -> list[Path]:
    """``documents`` small .txt/.md/.html files and ``large`` .txt files over 1 MiB,
    the same bytes for the same arguments."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i in range(documents):
        paras = _paragraphs(rng, rng.randint(2, 40))
        kind = ("txt", "md", "html")[i % 3]
        if kind == "txt":
            text = "\n\n".join(paras)
        elif kind == "md":
            parts = (f"## Part {j}\n\n{p}" for j, p in enumerate(paras))
            text = f"# Document {i}\n\n" + "\n\n".join(parts)
        else:
            body = "".join(f"<p>{p}</p>" for p in paras)
            text = f"<html><head><title>doc {i}</title></head><body>{body}</body></html>"
        path = root / f"doc-{i:03d}.{kind}"
        path.write_text(text + f"\n(document {i})\n")
        paths.append(path)
    for i in range(large):
        path = root / f"large-{i}.txt"
        with path.open("w") as f:
            while f.tell() < LARGE_BYTES:
                f.write("\n\n".join(_paragraphs(rng, 50)) + "\n\n")
        paths.append(path)
    return paths
