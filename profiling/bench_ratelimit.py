"""Rate-limit use: a bulk ingestion against an emulator with a tokens-per-minute budget.

    python -m profiling.bench_ratelimit [--tpm 120000] [--seconds 150] [--warmup 60] [--workers 2]

Reports the tokens per minute achieved in the steady window (after ``--warmup``,
when the bucket's initial burst is spent) as a fraction of the budget, and the
share of requests answered 429. Aim: ≥ 95 % of the budget, ≤ 1 % 429s.
The emulator counts tokens the way the API's limiter does (byte estimate).
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

from ingestd.shared.db.connect import connect
from ingestd.shared.ingest import ingest_file
from ingestd.shared.settings import Settings, load_settings
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
    args = ap.parse_args(argv)
    result = run(args)
    for k, v in result.items():
        print(f"{k:>22}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"ratelimit": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
