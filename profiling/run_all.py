"""Every benchmark in one run, one table, one JSON file to compare runs by.

    python -m profiling.run_all [--quick] [--compare OLD.json] [--json PATH]

Runs the claim benchmark (bench_claims), the pipeline benchmark (bench_pipeline)
with 1, 2 and 3 workers, the memory sweep (profiling.memory) and, when
profiling/bench_ratelimit.py exists, the rate-limit benchmark (150 s; 80 s quick). Writes
``profiling/out/results.json``: machine, git commit, timestamp, every benchmark's
figures, and a flat ``metrics`` map (name -> value, each with the direction that is
better). ``--compare OLD.json`` prints each metric's change against an older run and
marks the ones that got worse by more than ``--tolerance`` (default 10 %).
``--quick`` runs smaller sizes (minutes instead of ~half an hour); compare quick
runs with quick runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from profiling import bench_claims, bench_pipeline, memory

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "profiling" / "out"
RESULTS_JSON = OUT / "results.json"
WORKER_COUNTS = (1, 2, 3)

# Benchmark arguments: (full, quick).
CLAIMS_ARGS = ([], ["--docs", "2000", "--batches", "1", "50"])
RATELIMIT_ARGS: tuple[list[str], list[str]] = ([], ["--seconds", "80", "--warmup", "30"])
PIPELINE_DOCS = (2000, 300)
DEFAULT_TOLERANCE = 0.10
MEMORY_NOISE_MB = 1.0  # memory changes smaller than this are never called worse


# -- machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    status = _git("status", "--porcelain")
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cpus": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": len(status.splitlines()) if status is not None else None,
    }


# -- benchmarks ---------------------------------------------------------------------------


def pipeline_scaling(
    workers: tuple[int, ...] = WORKER_COUNTS,
    *,
    docs: int = PIPELINE_DOCS[0],
    size: int = 8192,
    database_url: str | None = None,
) -> list[dict[str, Any]]:
    """bench_pipeline once per worker count (a fresh database each time)."""
    runs = []
    for n in workers:
        argv = ["--workers", str(n), "--docs", str(docs), "--size", str(size)]
        if database_url:
            argv += ["--database-url", database_url]
        print(f"\n## pipeline benchmark, {n} worker(s), {docs} documents", flush=True)
        runs.append(bench_pipeline.main(argv))
    return runs


def _ratelimit(quick: bool, database_url: str | None) -> dict[str, Any] | None:
    if importlib.util.find_spec("profiling.bench_ratelimit") is None:
        return None
    module = importlib.import_module("profiling.bench_ratelimit")
    print("\n## rate-limit benchmark", flush=True)
    db = ["--database-url", database_url] if database_url else []
    result: dict[str, Any] = module.main(RATELIMIT_ARGS[quick] + db)
    return result


def run_benchmarks(quick: bool, database_url: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    db = ["--database-url", database_url] if database_url else []
    print("## claim benchmark", flush=True)
    claims = bench_claims.main(CLAIMS_ARGS[quick] + db)
    pipeline = pipeline_scaling(docs=PIPELINE_DOCS[quick], database_url=database_url)
    print("\n## memory sweep", flush=True)
    sizes = list(memory.QUICK_SIZES if quick else memory.SWEEP_SIZES)
    pages = memory.QUICK_PDF_PAGES if quick else memory.SWEEP_PDF_PAGES
    # Kept in results.json only: a quick sweep must not replace a full memory.json.
    mem = memory.sweep(sizes, pages, database_url=database_url, json_path=None)
    results: dict[str, Any] = {"claims": claims, "pipeline": pipeline, "memory": mem}
    ratelimit = _ratelimit(quick, database_url)
    if ratelimit is not None:
        results["ratelimit"] = ratelimit
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


# -- flat metrics and comparison ------------------------------------------------------------

HIGHER, LOWER = "higher", "lower"  # which direction is better


def metrics(benchmarks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}

    def put(name: str, value: float | None, better: str) -> None:
        if value is not None:
            out[name] = {"value": value, "better": better}

    for r in benchmarks.get("claims", []):
        put(
            f"claims.consumers{r['consumers']}.batch{r['batch']}.claims_per_s",
            r["claims_per_second"],
            HIGHER,
        )
    for r in benchmarks.get("pipeline", []):
        w = f"pipeline.workers{r['workers']}"
        put(f"{w}.chunks_per_s", r["chunks_per_second"], HIGHER)
        put(f"{w}.docs_per_s", r["docs_per_second"], HIGHER)
        put(f"{w}.peak_uss_mb_per_worker", r["peak_uss_mb_per_worker"], LOWER)
        for part, us in (r.get("cpu_us_per_chunk") or {}).items():
            put(f"{w}.cpu_us_per_chunk.{part}", us, LOWER)
    for row in benchmarks.get("memory", {}).get("rows", []):
        m = f"memory.{row['document']}"
        for stage, peak in row["stages"].items():
            put(f"{m}.{stage}.peak_mb", peak["peak_mb"], LOWER)
        put(f"{m}.worker.peak_uss_mb", row["worker"]["peak_uss_mb"], LOWER)
        put(f"{m}.worker.ready_uss_mb", row["worker"]["ready_uss_mb"], LOWER)
    rl = benchmarks.get("ratelimit") or {}
    put("ratelimit.fraction_of_budget", rl.get("fraction_of_budget"), HIGHER)
    put("ratelimit.achieved_tpm", rl.get("achieved_tpm"), HIGHER)
    put("ratelimit.share_429", rl.get("share_429"), LOWER)
    return out


def compare(new: dict[str, Any], old: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    rows = []
    for name, m in new["metrics"].items():
        before = old.get("metrics", {}).get(name)
        if before is None:
            rows.append(
                {"metric": name, "old": None, "new": m["value"], "change": None, "verdict": "new"}
            )
            continue
        change = (m["value"] - before["value"]) / before["value"] if before["value"] else 0.0
        # A small peak doubling by half a megabyte is allocator noise, not a regression.
        noticeable = abs(m["value"] - before["value"]) > (
            MEMORY_NOISE_MB if name.endswith("_mb") else 0
        )
        worse = noticeable and (
            change < -tolerance if m["better"] == HIGHER else change > tolerance
        )
        better = noticeable and (
            change > tolerance if m["better"] == HIGHER else change < -tolerance
        )
        rows.append(
            {
                "metric": name,
                "old": before["value"],
                "new": m["value"],
                "change": change,
                "verdict": "WORSE" if worse else ("better" if better else ""),
            }
        )
    for name in old.get("metrics", {}):
        if name not in new["metrics"]:
            rows.append(
                {
                    "metric": name,
                    "old": old["metrics"][name]["value"],
                    "new": None,
                    "change": None,
                    "verdict": "gone",
                }
            )
    return rows


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.4g}" if abs(v) < 100 else f"{v:,.1f}"


def print_table(results: dict[str, Any], deltas: list[dict[str, Any]] | None) -> None:
    width = max(len(n) for n in results["metrics"]) + 2
    print()
    print(
        f"ingestd benchmarks  {results['timestamp']}  {results['machine']['cpu']} "
        f"x{results['machine']['logical_cpus']}  commit {results['machine']['git_commit']}"
    )
    if deltas is None:
        print(f"{'metric':<{width}}{'value':>14}  better")
        for name, m in results["metrics"].items():
            print(f"{name:<{width}}{_num(m['value']):>14}  {m['better']}")
        return
    print(f"{'metric':<{width}}{'old':>14}{'new':>14}{'change':>10}")
    for d in deltas:
        change = "-" if d["change"] is None else f"{d['change'] * 100:+.1f}%"
        print(
            f"{d['metric']:<{width}}{_num(d['old']):>14}{_num(d['new']):>14}{change:>10}"
            f"  {d['verdict']}"
        )
    worse = [d["metric"] for d in deltas if d["verdict"] == "WORSE"]
    print(
        f"\n{len(worse)} metric(s) worse than the old run"
        + (": " + ", ".join(worse) if worse else "")
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m profiling.run_all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smaller runs (a few minutes)")
    ap.add_argument("--compare", type=Path, metavar="OLD.json", help="print deltas against it")
    ap.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="relative change that counts as worse (default 0.10)",
    )
    ap.add_argument("--json", type=Path, default=RESULTS_JSON, help="where to write results")
    ap.add_argument("--database-url", help="server to use (default: embedded, in a temp dir)")
    args = ap.parse_args(argv)
    old = json.loads(args.compare.read_text()) if args.compare else None

    benchmarks = run_benchmarks(args.quick, args.database_url)
    results = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "command": " ".join(
            [
                Path(sys.executable).name,
                "-m",
                "profiling.run_all",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "benchmarks": benchmarks,
    }
    results["metrics"] = metrics(benchmarks)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    deltas = None
    if old is not None:
        if old.get("quick") != args.quick:
            print(
                f"note: comparing a {'quick' if args.quick else 'full'} run with a "
                f"{'quick' if old.get('quick') else 'full'} one"
            )
        deltas = compare(results, old, args.tolerance)
        results["compared_with"] = {"file": str(args.compare), "deltas": deltas}
        args.json.write_text(json.dumps(results, indent=2))
    print_table(results, deltas)
    print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
