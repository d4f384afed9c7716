"""Pipeline throughput: ingest many small documents through a zero-latency OpenAI
emulator into pgvector and report chunks/s and peak memory per worker.

    python -m profiling.bench_pipeline [--docs 2000] [--size 8192] [--workers 2] [--repeat 1]

The reference point (../shared/reference/peers.md): pgai's vectorizer worker does
≈ 460 chunks/s with 238 MB peak RSS on this kind of machine for 2,000 × 8 KB
documents → 40,000 chunks × 1536 dims. The defaults here reproduce that shape
(≈ 20 chunks per document). The emulator runs as its own process.

On a shared 2-core VM one run can be 20% off the next for the host's sake alone:
``--repeat N`` runs N times, each on a fresh server, and reports the median run
(and every run's figure); compare two versions of the code with runs interleaved.

Each run also says where the CPU went: microseconds per chunk spent by the workers,
PostgreSQL (when the server is on this machine), the emulator and everything else,
and how busy the cores were (``profiling/cpu.py``). On a busy machine the sum bounds
the throughput (cores × busy share / CPU per chunk), and a change shows in the part
that paid for it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from ingestd.shared.db.connect import connect
from ingestd.shared.ingest import ingest_file
from ingestd.shared.settings import Settings, load_settings
from ingestd.workers.process import preload
from profiling import generators
from profiling.cpu import CpuMeter, per_unit, postmaster_of, wait_for_backends_to_leave
from profiling.scratch import scratch_database, scratch_dir
from tests.emulators.openai_api import DEFAULT_API_KEY


def start_emulator(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulators",
            "openai",
            "--port",
            "0",
            "--estimate-usage",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {url!r}")
    return proc, url


def _worker(settings: Settings, url: str, slot: int) -> None:
    from profiling.worker_setup import daemon_like_worker

    with daemon_like_worker(settings, url, f"bench:{os.getpid()}:{slot}:0", slot) as w:
        w.run(until_idle=True)


class PeakWatcher(threading.Thread):
    """Each worker's peak RSS (the kernel's own high-water mark, VmHWM, so no peak is
    missed between samples) and peak USS (what the worker alone costs; sampled, as
    only smaps has it). Reading smaps is not free: once a second keeps the watcher
    under 1% of a core, out of the way of what is measured."""

    def __init__(self, pids: list[int], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.procs = [psutil.Process(p) for p in pids]
        self.peak_rss = dict.fromkeys(pids, 0)
        self.peak_uss = dict.fromkeys(pids, 0)
        self.interval = interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for p in self.procs:
                try:
                    uss = p.memory_full_info().uss
                    hwm = _vm_hwm(p.pid)
                except (psutil.Error, OSError):
                    continue
                self.peak_rss[p.pid] = max(self.peak_rss[p.pid], hwm)
                self.peak_uss[p.pid] = max(self.peak_uss[p.pid], uss)
            self.stop.wait(self.interval)


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    with scratch_database(args.database_url, "ingestd-bench-") as url:
        return _run_on(url, args)


def _run_on(url: str, args: argparse.Namespace) -> dict[str, Any]:
    emulator, api_url = start_emulator()
    try:
        settings = load_settings(
            environ={
                "INGESTD_HOME": str(scratch_dir("ingestd-bench-home-")),
                "INGESTD_DATABASE_URL": url,
                "INGESTD_EMBEDDER": "openai",
                "OPENAI_API_KEY": DEFAULT_API_KEY,
                "OPENAI_BASE_URL": api_url,
                "INGESTD_CHUNK_TARGET_TOKENS": str(args.chunk_tokens),
                "INGESTD_CHUNK_OVERLAP_TOKENS": str(args.overlap_tokens),
                "INGESTD_EMBED_CONCURRENCY": str(args.concurrency),
                "INGESTD_CLAIM_BATCH": str(args.claim_batch),
                "INGESTD_BATCH_MAX_INPUTS": str(args.batch_inputs),
                # The HNSW build is a one-off, measured on its own (``index_seconds``).
                "INGESTD_INDEX_MIN_ROWS": str(10**9),
            }
        )
        docs_dir = scratch_dir("ingestd-bench-docs-")
        conn = connect(url, autocommit=True)
        t0 = time.perf_counter()
        for i in range(args.docs):
            path = generators.write_text(docs_dir / f"doc{i:05d}.txt", args.size, seed=i)
            ingest_file(conn, path)
        ingest_s = time.perf_counter() - t0

        # As the supervisor does before forking: a worker's start-up imports are paid
        # once per daemon, not inside the measured window.
        preload(settings)
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(settings, url, s)) for s in range(args.workers)]
        cpu = CpuMeter(postmaster_of(conn), psutil.Process(emulator.pid))
        cpu.start()
        t1 = time.perf_counter()
        for p in procs:
            p.start()
        watcher = PeakWatcher([p.pid for p in procs if p.pid])
        watcher.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t1
        watcher.stop.set()
        watcher.join()
        if not wait_for_backends_to_leave(conn):
            print("warning: worker connections outlived the workers; CPU figures are short")
        spent = cpu.stop()
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'complete') AS complete, count(*) AS docs,"
            " (SELECT count(*) FROM chunks WHERE embedding IS NOT NULL) AS chunks FROM documents"
        ).fetchone()
        assert row is not None
        if row["complete"] != row["docs"]:
            raise RuntimeError(f"only {row['complete']} of {row['docs']} documents completed")
        t2 = time.perf_counter()
        from ingestd.workers.maintenance import maybe_build_index

        if not args.skip_index:
            maybe_build_index(url, min_rows=1)
        index_s = time.perf_counter() - t2
        return {
            "docs": row["docs"],
            "chunks": row["chunks"],
            "workers": args.workers,
            "dims": 1536,
            "ingest_seconds": round(ingest_s, 2),
            "pipeline_seconds": round(wall, 2),
            "chunks_per_second": round(row["chunks"] / wall),
            "docs_per_second": round(row["docs"] / wall, 1),
            "peak_rss_mb_per_worker": round(max(watcher.peak_rss.values()) / 2**20, 1),
            "peak_uss_mb_per_worker": round(max(watcher.peak_uss.values()) / 2**20, 1),
            "cpu_us_per_chunk": per_unit(spent, row["chunks"]),
            "cores_busy_percent": round(spent["busy_percent"] or 0.0, 1),
            "index_seconds": round(index_s, 2),
        }
    finally:
        emulator.terminate()
        emulator.wait(10)


def _run_line(r: dict[str, Any]) -> str:
    cpu = r["cpu_us_per_chunk"]
    parts = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if v is not None and k != "all")
    return (
        f"{r['chunks_per_second']} chunks/s; CPU {cpu['all']:.0f} µs per chunk ({parts}),"
        f" cores {r['cores_busy_percent']:.0f} % busy"
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median chunks/s, with every run's figure and the highest
    memory peaks of all runs."""
    result = dict(sorted(runs, key=lambda r: r["chunks_per_second"])[(len(runs) - 1) // 2])
    if len(runs) > 1:
        result["chunks_per_second_runs"] = [r["chunks_per_second"] for r in runs]
        for key in ("peak_rss_mb_per_worker", "peak_uss_mb_per_worker"):
            result[key] = max(r[key] for r in runs)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-tokens", type=int, default=96)
    ap.add_argument("--overlap-tokens", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--claim-batch", type=int, default=64)
    ap.add_argument("--batch-inputs", type=int, default=512, help="inputs per embedding request")
    ap.add_argument("--skip-index", action="store_true", help="don't time the HNSW build")
    ap.add_argument("--database-url")
    ap.add_argument("--repeat", type=int, default=1, help="runs; the median one is reported")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    runs = []
    for i in range(args.repeat):
        runs.append(run(args))
        if args.repeat > 1:
            print(f"run {i + 1}/{args.repeat}: {_run_line(runs[-1])}", flush=True)
    result = median_run(runs)
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"pipeline": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
