"""Enqueue throughput: ``ingestd ingest DIR`` (the real command, as a subprocess) into a
fresh database, and what it cost the command and PostgreSQL.

    python -m profiling.bench_ingest [--files 2000] [--size 8192]
        [--large-files 100] [--large-size 2097152] [--repeat 3] [--compare-with REF]

Two corpora: many small files (the issue's 2,000 × 8 KB) and fewer large ones (each
streamed into its large object in 1 MiB pieces). Each is ingested into a database of
its own, then ingested again (every file already there: the ``exists`` path). For each
run it prints files/s, MB/s, the command's wall time (start-up included; the start-up
alone, an ``ingest`` that finds nothing, is measured too) and the CPU
seconds per 100 files that PostgreSQL (every server process) and the command spent
(``profiling/cpu.py``).

``--compare-with REF`` also runs the command as it was at git revision REF (its
``shared``, ``workers`` and ``supervisor`` exported with ``git archive``, put first on
the subprocess's import path), interleaved with this checkout's runs on the same
corpora and the same server build, and prints the medians side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from ingestd.shared.db.connect import connect
from profiling import generators
from profiling.cpu import CpuMeter, postmaster_of, wait_for_backends_to_leave
from profiling.scratch import scratch_database, scratch_dir

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("shared", "workers", "supervisor")


@dataclass(frozen=True)
class Variant:
    name: str
    pythonpath: str | None  # a directory holding an ``ingestd`` namespace, or this checkout


def export_revision(ref: str) -> Variant:
    """The code at ``ref`` as an importable ``ingestd`` namespace in a scratch directory."""
    home = scratch_dir("ingestd-bench-ref-")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, *LAYERS],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(home / "ingestd", filter="data")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Variant(f"{ref} ({commit})", str(home))


def make_corpus(root: Path, files: int, size: int, seed: int) -> Path:
    for i in range(files):
        sub = root / f"d{i // 500:03d}"  # a tree, as a real corpus is
        sub.mkdir(parents=True, exist_ok=True)
        generators.write_text(sub / f"doc{i:05d}.txt", size, seed=seed + i)
    return root


def _env(url: str, variant: Variant) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "OPENAI_"))}
    env.update(
        INGESTD_HOME=str(scratch_dir("ingestd-bench-home-")),
        INGESTD_DATABASE_URL=url,
        INGESTD_EMBEDDER="hash",
    )
    if variant.pythonpath:
        # Ahead of the editable install's finder, which only answers what sys.path did not.
        env["PYTHONPATH"] = variant.pythonpath
    return env


def _ingest_once(
    conn: Any, env: dict[str, str], corpus: Path, *, expect: int = 0
) -> tuple[float, dict[str, Any]]:
    cpu = CpuMeter(postmaster_of(conn))
    cpu.start()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "ingest", "-q", str(corpus)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != expect:
        raise RuntimeError(f"ingest exited {proc.returncode}: {proc.stderr[-2000:]}")
    if not wait_for_backends_to_leave(conn):
        print("warning: the command's connection outlived it; CPU figures are short")
    return wall, cpu.stop()


def measure(
    variant: Variant, corpus: Path, files: int, size: int, database_url: str | None
) -> dict[str, Any]:
    """One fresh database: the corpus ingested, then ingested again."""
    with scratch_database(database_url, "ingestd-bench-ingest-") as url:
        conn = connect(url, autocommit=True)
        try:
            env = _env(url, variant)
            # The command's fixed cost (imports, connecting, the schema check): nothing found.
            startup, _ = _ingest_once(conn, env, scratch_dir("ingestd-bench-empty-"), expect=1)
            first_wall, first_cpu = _ingest_once(conn, env, corpus)
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) AS docs,"
                " (SELECT count(*) FROM document_events) AS events FROM documents"
            ).fetchone()
            assert row is not None
            if row["docs"] != files or row["queued"] != files or row["events"] != files:
                raise RuntimeError(f"expected {files} queued documents and events, got {row}")
            again_wall, again_cpu = _ingest_once(conn, env, corpus)
        finally:
            conn.close()
    per100 = files / 100

    def cpu(c: dict[str, Any], part: str) -> float | None:
        return None if c[part] is None else round(c[part] / per100, 3)

    return {
        "variant": variant.name,
        "files": files,
        "wall_s": round(first_wall, 2),
        "files_per_s": round(files / first_wall),
        "mb_per_s": round(files * size / 2**20 / first_wall, 1),
        "startup_s": round(startup, 2),
        "files_per_s_after_startup": round(files / max(first_wall - startup, 1e-3)),
        "pg_cpu_s_per_100": cpu(first_cpu, "postgres"),
        "cli_cpu_s_per_100": cpu(first_cpu, "workers"),
        "again_wall_s": round(again_wall, 2),
        "again_pg_cpu_s_per_100": cpu(again_cpu, "postgres"),
    }


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['variant']:<28} {r['files_per_s']:>6} files/s {r['mb_per_s']:>7} MB/s"
        f"  wall {r['wall_s']:>6} s (start-up {r['startup_s']} s; after it"
        f" {r['files_per_s_after_startup']} files/s)"
        f"  CPU s/100 files: PostgreSQL {r['pg_cpu_s_per_100']},"
        f" command {r['cli_cpu_s_per_100']}  | again: {r['again_wall_s']} s,"
        f" PostgreSQL {r['again_pg_cpu_s_per_100']}"
    )


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"variant": runs[0]["variant"], "files": runs[0]["files"]}
    for key, value in runs[0].items():
        if isinstance(value, int | float) and key != "files":
            vals = [r[key] for r in runs if r[key] is not None]
            out[key] = round(statistics.median(vals), 3) if vals else None
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--large-files", type=int, default=100, help="0: no large-file corpus")
    ap.add_argument("--large-size", type=int, default=2 << 20)
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant, interleaved")
    ap.add_argument("--compare-with", metavar="REF", help="also run the command at git REF")
    ap.add_argument("--database-url")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    variants = [Variant("this checkout", None)]
    if args.compare_with:
        variants.insert(0, export_revision(args.compare_with))
    inputs = scratch_dir("ingestd-bench-ingest-docs-")
    corpora = [
        ("small", make_corpus(inputs / "small", args.files, args.size, 0), args.files, args.size)
    ]
    if args.large_files:
        corpora.append(
            (
                "large",
                make_corpus(inputs / "large", args.large_files, args.large_size, 10**6),
                args.large_files,
                args.large_size,
            )
        )
    results: dict[str, Any] = {}
    for label, corpus, files, size in corpora:
        print(f"== {label}: {files} × {size:,} bytes", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
        for i in range(args.repeat):
            for variant in variants:
                r = measure(variant, corpus, files, size, args.database_url)
                runs[variant.name].append(r)
                print(f"run {i + 1}/{args.repeat}  {_line(r)}", flush=True)
        medians = [_median(rs) for rs in runs.values()]
        print(f"-- {label}, median of {args.repeat}:")
        for m in medians:
            print(f"median     {_line(m)}")
        results[label] = {"runs": runs, "medians": medians}
    if args.json:
        args.json.write_text(json.dumps({"ingest": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
