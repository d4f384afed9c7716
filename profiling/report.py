"""The performance report's plots, regenerated from a results file.

    python -m profiling.report [RESULTS.json] [--memory MEMORY.json] [--run-pipeline]
                               [--workers 1 2 3] [--docs 2000]

Writes PNGs into profiling/out/:

* ``memory_vs_size.png``: peak memory against document size. Left, the memray peak of
  each in-process stage function (parse, chunk, batch, write); right, a worker
  process's peak USS, its USS when ready (before the first document) and the 150 MB
  target. PDFs are drawn as stars at their file size. Flat lines mean
  memory is bounded by batch sizes, not by the document.
* ``throughput_vs_workers.png``: pipeline chunks/s and documents/s against the number
  of worker processes, and each worker's peak USS.
* ``claims.png``: claims/s against claim batch size, per number of consumers.

RESULTS.json is what ``python -m profiling.run_all`` writes (default
profiling/out/results.json). Without it the memory plot uses profiling/out/memory.json
(``python -m profiling.memory sweep``). When no pipeline runs for several worker
counts are found (or with ``--run-pipeline``), bench_pipeline runs once per
``--workers`` count first and its figures are kept in profiling/out/pipeline_scaling.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or in CI

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullLocator

from profiling import memory
from profiling.run_all import RESULTS_JSON, WORKER_COUNTS, pipeline_scaling

OUT = memory.OUT
SCALING_JSON = OUT / "pipeline_scaling.json"
STAGE_COLOURS = {
    "parse": "tab:blue",
    "chunk": "tab:orange",
    "batch": "tab:green",
    "write": "tab:purple",
}
# bench_pipeline's reference point (shared/reference/peers.md): pgai's vectorizer worker.
PGAI_CHUNKS_PER_S = 460


def _bytes(x: float, _pos: Any = None) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if x >= factor:
            return f"{x / factor:.3g} {unit}"
    return f"{x:g} B"


def plot_memory(mem: dict[str, Any], path: Path) -> Path:
    rows = mem["rows"]
    texts = sorted((r for r in rows if r["kind"] != "pdf"), key=lambda r: r["bytes"])
    pdfs = [r for r in rows if r["kind"] == "pdf"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))

    for stage, colour in STAGE_COLOURS.items():
        left.plot(
            [r["bytes"] for r in texts],
            [r["stages"][stage]["peak_mb"] for r in texts],
            "o-",
            color=colour,
            label=stage,
        )
        for r in pdfs:
            left.plot(r["bytes"], r["stages"][stage]["peak_mb"], "*", color=colour, markersize=13)
    for r in pdfs:
        top = max(p["peak_mb"] for p in r["stages"].values())
        left.annotate(
            f"PDF {r['pages']} p",
            (r["bytes"], top),
            textcoords="offset points",
            xytext=(8, 4),
            fontsize=8,
        )
    left.set_title("In-process stage functions: memray peak heap")
    left.set_ylabel("peak MB (allocated by the stage)")

    xs = [r["bytes"] for r in texts]
    right.plot(
        xs,
        [r["worker"]["peak_uss_mb"] for r in texts],
        "o-",
        color="tab:red",
        label="worker peak USS",
    )
    right.plot(
        xs,
        [r["worker"]["ready_uss_mb"] for r in texts],
        "o--",
        color="tab:gray",
        label="worker USS when ready",
    )
    for r in pdfs:
        right.plot(r["bytes"], r["worker"]["peak_uss_mb"], "*", color="tab:red", markersize=13)
        right.annotate(
            f"PDF {r['pages']} p",
            (r["bytes"], r["worker"]["peak_uss_mb"]),
            textcoords="offset points",
            xytext=(8, 4),
            fontsize=8,
        )
    target = mem.get("targets", {}).get("worker_peak_uss_mb", memory.WORKER_USS_TARGET_MB)
    right.axhline(target, color="black", linestyle=":", label=f"target {target:g} MB")
    right.set_ylim(0, max(target * 1.2, *(r["worker"]["peak_uss_mb"] * 1.1 for r in rows)))
    right.set_title("Worker process: peak USS (psutil)")
    right.set_ylabel("MB")

    for ax in (left, right):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_bytes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks([r["bytes"] for r in texts])
        ax.set_xlabel("document size (text; ★ = PDF, at its file size)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left")
    left.set_ylim(bottom=0)
    fig.suptitle(f"Peak memory against document size (embedder: {mem.get('embedder', '?')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_throughput(runs: list[dict[str, Any]], path: Path) -> Path:
    runs = sorted(runs, key=lambda r: r["workers"])
    workers = [r["workers"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(
        workers, [r["chunks_per_second"] for r in runs], "o-", color="tab:blue", label="chunks/s"
    )
    left.axhline(
        PGAI_CHUNKS_PER_S,
        color="tab:gray",
        linestyle=":",
        label=f"pgai vectorizer reference ({PGAI_CHUNKS_PER_S} chunks/s)",
    )
    left.set_ylabel("chunks per second")
    left.set_ylim(bottom=0)
    docs_axis = left.twinx()
    docs_axis.plot(
        workers, [r["docs_per_second"] for r in runs], "s--", color="tab:green", label="documents/s"
    )
    docs_axis.set_ylabel("documents per second")
    docs_axis.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()
    extra = docs_axis.get_legend_handles_labels()
    left.legend(handles[0] + extra[0], handles[1] + extra[1], loc="lower right")
    first = runs[0]
    left.set_title(
        f"Throughput ({first['docs']} docs, {first['chunks']} chunks, {first['dims']} dims)"
    )

    right.bar(
        [str(w) for w in workers],
        [r["peak_uss_mb_per_worker"] for r in runs],
        color="tab:red",
        alpha=0.7,
        label="peak USS",
    )
    right.plot(
        [str(w) for w in workers],
        [r["peak_rss_mb_per_worker"] for r in runs],
        "ko",
        label="peak RSS",
    )
    right.set_ylabel("MB per worker")
    right.set_title("Memory per worker")
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.set_xlabel("worker processes")
        ax.grid(True, alpha=0.3)
    left.set_xticks(workers)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_claims(rows: list[dict[str, Any]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for consumers in sorted({r["consumers"] for r in rows}):
        mine = sorted((r for r in rows if r["consumers"] == consumers), key=lambda r: r["batch"])
        ax.plot(
            [r["batch"] for r in mine],
            [r["claims_per_second"] for r in mine],
            "o-",
            label=f"{consumers} consumer(s)",
        )
    ax.set_xscale("log")
    batches = sorted({r["batch"] for r in rows})
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("documents per claim")
    ax.set_ylabel("claims per second")
    ax.set_title("Claim throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load(path: Path | None) -> dict[str, Any]:
    if path is not None:
        return json.loads(path.read_text())  # named explicitly: it must exist
    return json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(
        prog="python -m profiling.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("results", nargs="?", type=Path, help=f"default {RESULTS_JSON}")
    ap.add_argument(
        "--run-pipeline",
        action="store_true",
        help="run bench_pipeline for each --workers count even if results exist",
    )
    ap.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    ap.add_argument("--docs", type=int, default=2000, help="documents per pipeline run")
    ap.add_argument(
        "--memory",
        type=Path,
        metavar="MEMORY.json",
        help="memory figures from this sweep file instead of the results",
    )
    args = ap.parse_args(argv)
    benchmarks = _load(args.results).get("benchmarks", {})
    OUT.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    mem = json.loads(args.memory.read_text()) if args.memory else benchmarks.get("memory")
    if mem is None and memory.MEMORY_JSON.exists():
        mem = json.loads(memory.MEMORY_JSON.read_text())
    if mem is None:
        print("no memory figures: run `python -m profiling.memory sweep` or profiling.run_all")
    else:
        written.append(plot_memory(mem, OUT / "memory_vs_size.png"))

    runs = benchmarks.get("pipeline") or []
    if len({r["workers"] for r in runs}) < 2 and SCALING_JSON.exists():
        runs = json.loads(SCALING_JSON.read_text())
    if args.run_pipeline or len({r["workers"] for r in runs}) < 2:
        runs = pipeline_scaling(tuple(args.workers), docs=args.docs)
        SCALING_JSON.write_text(json.dumps(runs, indent=2))
    written.append(plot_throughput(runs, OUT / "throughput_vs_workers.png"))

    if benchmarks.get("claims"):
        written.append(plot_claims(benchmarks["claims"], OUT / "claims.png"))
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
