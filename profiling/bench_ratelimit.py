"""Rate-limit use: a bulk ingestion against an emulator with a tokens-per-minute budget.

    python -m profiling.bench_ratelimit [--tpm 120000] [--seconds 150] [--warmup 60] [--workers 2]

Reports the tokens per minute achieved in the steady window (after ``--warmup``,
when the bucket's initial burst is spent) as a fraction of the budget, and the
share of requests answered 429. Aim: ≥ 95 % of the budget, ≤ 1 % 429s.
The emulator counts tokens the way the API's limiter does (byte estimate).

    python -m profiling.bench_ratelimit --batch-sizes 1 8 64 256 1024 2048 \
        [--tpm 600000] [--window 10] [--seconds 30] [--workers 2] [--configured]

The same question at every request size: for each batch size, ``--workers``
processes run the embed stage's own send loop (``pack`` with the limiter's room,
``embed_batches``, the OpenAI embedder and its limiter, each process with its
share of the account) against one emulator for ``--seconds``. Inputs weigh
``min(8000, 90000 // batch)`` estimated tokens, so requests run from 8,000 to
~90,000 tokens. The budget's window is shortened to ``--window`` seconds on both
sides (emulator and limiters) so a run sees several windows; ``--configured``
gives the limiters the TPM up front instead of learning it from the headers.
Budget available = a full bucket + the refill over the run. Prints a table and
writes ``profiling/out/ratelimit_batch_sizes.{csv,png}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

from ingestd.shared.batching import BatchItem, BatchLimits, pack
from ingestd.shared.db.connect import connect
from ingestd.shared.embedders.openai import OpenAIEmbedder
from ingestd.shared.ingest import ingest_file
from ingestd.shared.resilience import RateLimiter
from ingestd.shared.settings import Settings, load_settings
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.stages.embed import embed_batches
from profiling import generators
from profiling.scratch import scratch_database, scratch_dir
from tests.emulators.openai_api import DEFAULT_API_KEY, OpenAIEmulator, OpenAIEmulatorConfig
from tests.emulators.runner import running


def _worker(settings: Settings, url: str, slot: int) -> None:
    from profiling.worker_setup import daemon_like_worker

    with daemon_like_worker(settings, url, f"rl:{os.getpid()}:{slot}:0", slot) as w:
        signal.signal(signal.SIGTERM, lambda *_: w.stop.request("benchmark over"))
        w.run()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with scratch_database(args.database_url, "ingestd-rl-") as url:
        return _run_on(url, args)


def _run_on(url: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = connect(url, autocommit=True)
    docs_dir = scratch_dir("ingestd-rl-docs-")
    # Enough work to outlast the run at the budget's pace.
    per_doc = args.size // 4
    n_docs = int(args.tpm / 60 * args.seconds / per_doc * 1.5) + 10
    for i in range(n_docs):
        ingest_file(conn, generators.write_text(docs_dir / f"d{i:05d}.txt", args.size, seed=i))
    config = OpenAIEmulatorConfig(tpm=args.tpm, rpm=args.rpm, exact_usage=False)
    with running(OpenAIEmulator(config)) as api:
        settings = load_settings(
            environ={
                "INGESTD_HOME": str(scratch_dir("ingestd-rl-home-")),
                "INGESTD_DATABASE_URL": url,
                "INGESTD_EMBEDDER": "openai",
                "OPENAI_API_KEY": DEFAULT_API_KEY,
                "OPENAI_BASE_URL": api.base_url,
                "INGESTD_OPENAI_TPM": str(args.tpm),
                "INGESTD_OPENAI_RPM": str(args.rpm),
                "INGESTD_WORKERS": str(args.workers),
                "INGESTD_BATCH_MAX_TOKENS": str(args.batch_tokens),
            }
        )
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(settings, url, s)) for s in range(args.workers)]
        start = time.time()  # the emulator stamps records with wall-clock time
        for p in procs:
            p.start()
        time.sleep(args.seconds)  # the benchmark's duration, not synchronisation
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)  # type: ignore[arg-type]
        for p in procs:
            p.join(60)
        records = [r for r in api.stats.records if r.path.endswith("/embeddings")]
    lo, hi = start + args.warmup, start + args.seconds
    window = [r for r in records if lo <= r.time < hi]
    ok_tokens = sum(r.tokens for r in window if r.status == 200)
    minutes = (hi - lo) / 60
    achieved = ok_tokens / minutes
    n429 = sum(1 for r in records if r.status == 429)
    return {
        "tpm_budget": args.tpm,
        "workers": args.workers,
        "seconds": args.seconds,
        "steady_window_seconds": round(hi - lo, 1),
        "achieved_tpm": round(achieved),
        "fraction_of_budget": round(achieved / args.tpm, 4),
        "requests": len(records),
        "rate_limited_429": n429,
        "share_429": round(n429 / max(len(records), 1), 4),
    }


# -- request size sweep ---------------------------------------------------------------------
OUT = Path(__file__).parent / "out"
_WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch".split()  # noqa: SIM905
_REQUEST_TOKENS = 90_000  # the figure: default batch limits on 8 KB documents
_MAX_INPUT_TOKENS = 8_000
_DIMENSIONS = 64  # small vectors: the emulator's CPU goes to the requests, not base64


def _text(index: int, tokens: int) -> str:
    """A text of ``tokens`` estimated tokens (4 bytes each), unique to ``index``."""
    head = f"{index} "
    body = " ".join(_WORDS[(index + k) % len(_WORDS)] for k in range(tokens))
    return (head + body)[: tokens * 4].ljust(tokens * 4, ".")


def _sender(base_url: str, args: argparse.Namespace, batch: int, slot: int) -> None:
    per_input = min(_MAX_INPUT_TOKENS, _REQUEST_TOKENS // batch)
    texts = [_text(slot * 10_000 + i, per_input) for i in range(batch)]

    async def main() -> None:
        limiter = RateLimiter(
            args.rpm if args.configured else None,
            args.tpm if args.configured else None,
            share=1 / args.workers,
            window=args.window,
            name="openai",
        )
        embedder = OpenAIEmbedder(
            DEFAULT_API_KEY,
            base_url=base_url,
            dimensions=_DIMENSIONS,
            limiter=limiter,
            max_wait=3600,
            max_tokens_per_request=300_000,
        )
        deadline = time.monotonic() + args.seconds

        def items() -> Any:
            i = 0
            while time.monotonic() < deadline:
                yield BatchItem(i, texts[i % batch], per_input)
                i += 1

        try:
            await embed_batches(
                pack(items(), BatchLimits(max_inputs=batch), embedder.request_room),
                embedder,
                concurrency=2,  # the embed_concurrency default
                correlation_id=f"bench-{slot}",
                store=lambda b, _v: len(b),
                checkpoint=lambda **_: None,
                metrics=Metrics(None, role="worker", strict=False),
            )
        finally:
            await embedder.aclose()

    import asyncio

    asyncio.run(main())


def sweep_one(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    config = OpenAIEmulatorConfig(
        tpm=args.tpm, rpm=args.rpm, exact_usage=False, window_seconds=args.window
    )
    with running(OpenAIEmulator(config)) as api:
        ctx = mp.get_context("fork")
        procs = [
            ctx.Process(target=_sender, args=(api.base_url, args, batch, s))
            for s in range(args.workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        records = [r for r in api.stats.records if r.path.endswith("/embeddings")]
    first = min(r.time for r in records)
    end = first + args.seconds
    counted = [r for r in records if r.time <= end]
    ok = [r for r in counted if r.status == 200]
    n429 = sum(1 for r in counted if r.status == 429)
    sent = sum(r.tokens for r in ok)
    available = args.tpm + args.tpm / args.window * (end - first)
    return {
        "batch_inputs": batch,
        "tokens_per_input": min(_MAX_INPUT_TOKENS, _REQUEST_TOKENS // batch),
        "mean_request_tokens": round(sent / max(len(ok), 1)),
        "requests": len(counted),
        "rate_limited_429": n429,
        "share_429": round(n429 / max(len(counted), 1), 4),
        "tokens_sent": sent,
        "budget_available": round(available),
        "budget_used": round(sent / available, 4),
    }


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for batch in args.batch_sizes:
        row = sweep_one(args, batch)
        rows.append(row)
        print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    OUT.mkdir(exist_ok=True)
    _write_csv(OUT / "ratelimit_batch_sizes.csv", rows)
    _plot(OUT / "ratelimit_batch_sizes.png", rows, args)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["batch_inputs"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [100 * r["share_429"] for r in rows], "o-")
    left.axhline(1.0, color="red", linestyle="--", label="1 % target")
    left.set(xscale="log", xlabel="inputs per request", ylabel="429 share (%)")
    left.legend()
    right.plot(sizes, [100 * r["budget_used"] for r in rows], "o-")
    right.axhline(95.0, color="red", linestyle="--", label="95 % target")
    right.set(xscale="log", xlabel="inputs per request", ylabel="budget used (%)")
    right.legend()
    how = "configured" if args.configured else "learnt from headers"
    fig.suptitle(
        f"TPM {args.tpm:,} per {args.window:g} s window, {args.workers} workers, "
        f"{args.seconds:g} s per size, limits {how}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tpm", type=int, default=120_000)
    ap.add_argument("--rpm", type=int, default=3_000)
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--batch-tokens", type=int, default=20_000)
    ap.add_argument("--database-url")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--batch-sizes", type=int, nargs="+", help="sweep these request sizes")
    ap.add_argument("--window", type=float, default=10.0, help="sweep: the budget's window")
    ap.add_argument("--configured", action="store_true", help="sweep: limits given up front")
    args = ap.parse_args(argv)
    if args.batch_sizes:
        if args.tpm == ap.get_default("tpm"):
            args.tpm = 600_000
        if args.seconds == ap.get_default("seconds"):
            args.seconds = 30.0
        return {"ratelimit_batch_sizes": sweep(args)}
    result = run(args)
    for k, v in result.items():
        print(f"{k:>22}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"ratelimit": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
