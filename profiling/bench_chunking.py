"""Chunker throughput, in-process: generated documents through ``Chunker.chunks``.

    python -m profiling.bench_chunking [--docs 400] [--size 8192] [--kinds text markdown]

Prints chunks/s, input MB/s and microseconds per chunk for each kind and chunk
shape (the pipeline benchmark's 96/8 tokens and the default 512/64), plus a
fingerprint of every chunk's ordinal, text, token count and heading. A change
meant only to make chunking faster must leave the fingerprints as they were:
the chunker's output is versioned (``Chunker.VERSION``), and any other output
would re-chunk nothing already stored, silently mixing two chunkers.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import time
from collections.abc import Iterator

from ingestd.shared.chunking import Chunker
from ingestd.shared.tokens import get_encoding
from profiling import generators

SHAPES = ((96, 8), (512, 64))


def document(kind: str, size: int, seed: int) -> str:
    rng = random.Random(seed)
    pieces: Iterator[str]
    if kind == "markdown":
        pieces = generators.markdown_pieces(rng)
    else:
        pieces = (p + "\n\n" for p in generators.paragraphs(rng))
    out = io.StringIO()
    for piece in pieces:
        out.write(piece)
        if out.tell() >= size:
            break
    return out.getvalue()


def run(kind: str, docs: list[str], target: int, overlap: int) -> dict[str, float | int | str]:
    chunker = Chunker(target, overlap)
    digest = hashlib.sha256()
    n = 0
    t0 = time.process_time()
    for text in docs:
        for c in chunker.chunks([text]):
            n += 1
            digest.update(f"{c.ordinal}\x00{c.token_count}\x00{c.heading}\x00{c.text}\x01".encode())
    cpu = time.process_time() - t0
    mb = sum(len(d.encode()) for d in docs) / 2**20
    return {
        "kind": kind,
        "shape": f"{target}/{overlap}",
        "chunks": n,
        "chunks_per_s": round(n / cpu),
        "mb_per_s": round(mb / cpu, 2),
        "us_per_chunk": round(cpu / n * 1e6, 1),
        "fingerprint": digest.hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--kinds", nargs="+", default=["text", "markdown"])
    args = ap.parse_args(argv)
    get_encoding()  # loading the BPE ranks is start-up, not chunking
    for kind in args.kinds:
        docs = [document(kind, args.size, seed) for seed in range(args.docs)]
        for target, overlap in SHAPES:
            r = run(kind, docs, target, overlap)
            print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
