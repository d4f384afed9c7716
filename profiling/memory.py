"""Memory profiles of the pipeline with memray, and a sweep that shows whether memory
stays flat as documents grow.

    python -m profiling.memory parse  [--kind text] [--size 10MB]  # blob -> parser -> segments
    python -m profiling.memory chunk  [--kind markdown]  # segments -> chunker -> chunks table
    python -m profiling.memory batch  [--size 100MB]     # chunks -> token-budgeted batches
    python -m profiling.memory write  [--size 10MB]      # embed stage: API + write_vectors
    python -m profiling.memory worker [--kind pdf --pages 2000]  # a whole Worker, in-process
    python -m profiling.memory sweep  [--quick]          # all of it, per size -> memory.json

Each stage scenario puts one generated document into a fresh database of an embedded
PostgreSQL (in a temp dir), claims it, runs the stages before the measured one
untracked, then runs the measured stage function (``workers/stages/*.run``, or
``shared.batching.pack`` for ``batch``) under ``memray.Tracker``. It writes the
capture to ``profiling/out/memray/``, then ``memray stats`` and ``memray flamegraph``
next to it, and prints the peak and where it was allocated.

``sweep`` measures every stage at 100 KB, 1 MB, 10 MB and 100 MB of text and on
1,000- and 2,000-page PDFs (memray peak of the in-process stage function), and a worker
running as its own process (peak USS sampled with psutil, and the kernel's peak
RSS), prints a table and writes ``profiling/out/memory.json``. Sizes are binary
(1 MB = 2**20 bytes). Embeddings come from the OpenAI emulator (a separate process,
so its memory is not counted) or, with ``--embedder hash``, the test hash embedder.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from ingestd.shared.batching import BatchItem, batch_weight, pack
from ingestd.shared.db import chunks, jobs
from ingestd.shared.db.connect import connect, database_url
from ingestd.shared.db.embedded import embedded_url
from ingestd.shared.db.space import ensure_space
from ingestd.shared.embedders.setup import build_embedder, space_for
from ingestd.shared.ingest import ingest_file
from ingestd.shared.settings import Settings, load_settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.tokens import get_encoding
from ingestd.workers.base import Worker
from ingestd.workers.context import StageContext
from ingestd.workers.loop import close_runner
from ingestd.workers.stages import chunk, embed, finalize, parse
from profiling import generators
from profiling.bench_pipeline import start_emulator
from profiling.scratch import drop_database, fresh_database, scratch_dir
from profiling.worker_setup import daemon_like_worker
from tests.emulators.openai_api import DEFAULT_API_KEY

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "profiling" / "out"
MEMRAY_DIR = OUT / "memray"
INPUTS_DIR = OUT / "inputs"
MEMORY_JSON = OUT / "memory.json"

MB = 2**20
KINDS = ("text", "markdown", "html", "pdf")
STAGES = ("parse", "chunk", "batch", "write")
SWEEP_SIZES = ("100KB", "1MB", "10MB", "100MB")
QUICK_SIZES = ("100KB", "1MB", "10MB", "25MB")
SWEEP_PDF_PAGES = (1000, 2000)
QUICK_PDF_PAGES = (200,)
PDF_PAGES = 2000  # a stage or worker scenario's default

# The goal (issue 7): a worker's peak USS on the 100 MB document.
WORKER_USS_TARGET_MB = 150.0
# "Flat": from the next-to-largest document to the largest (of each kind), a peak may
# rise by at most FLAT_SLACK_MB (allocator noise) or FLAT_PER_DOCUMENT_MB per MB of
# extra document, whichever is more. Something that holds the document rises by >= 1
# MB per MB. Text sizes must be at least FLAT_MIN_BYTES: below that the bounded
# buffers (a read page of 64 segments is 4 MB of text) are still filling up.
FLAT_SLACK_MB = 2.0
FLAT_PER_DOCUMENT_MB = 0.05
FLAT_MIN_BYTES = 8 * MB

_EXT = {"text": "txt", "markdown": "md", "html": "html", "pdf": "pdf"}
T = TypeVar("T")


# -- sizes and inputs ----------------------------------------------------------------


def parse_size(text: str) -> int:
    """``100KB``/``10MB``/``1GB`` (binary units) or a plain number of bytes."""
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "B": 1}
    t = text.strip().upper()
    try:
        for unit, factor in units.items():
            if t.endswith(unit):
                return int(float(t[: -len(unit)]) * factor)
        return int(t)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 100KB, 10MB)") from None


def size_label(n: int) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


@dataclass(frozen=True)
class Input:
    kind: str
    label: str  # e.g. text-10MB (the size asked for; generators stop just past it)
    path: Path
    size: int  # bytes on disk
    pages: int | None = None


def make_input(kind: str, *, size: int | None = None, pages: int | None = None) -> Input:
    """A generated document, cached under profiling/out/inputs (made once per size)."""
    if kind not in KINDS:
        raise SystemExit(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    INPUTS_DIR.mkdir(parents=True, exist_ok=True)
    if kind == "pdf":
        name, label = f"pdf-{pages}p.pdf", f"pdf-{pages}p"
    else:
        label = f"{kind}-{size_label(size or MB)}"
        name = f"{label}.{_EXT[kind]}"
    path = INPUTS_DIR / name
    if not path.exists():
        # Written under a temporary name: an interrupted run must not leave a short file
        # that a later run would take for the real input.
        partial = path.with_suffix(path.suffix + ".partial")
        if kind == "pdf":
            generators.write_pdf(partial, pages or PDF_PAGES, seed=7)
        else:
            writer = {
                "text": generators.write_text,
                "markdown": generators.write_markdown,
                "html": generators.write_html,
            }[kind]
            writer(partial, size or MB, seed=7)
        partial.replace(path)
    return Input(kind, label, path, path.stat().st_size, pages if kind == "pdf" else None)


# -- memray ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """One allocation stack alive at the high-water mark."""

    mb: float
    allocations: int
    where: str  # innermost frame, "function file:line"
    caller: str  # innermost frame in this repository's code (shared/, workers/, ...)


@dataclass
class Peak:
    name: str
    peak_mb: float
    seconds: float
    bin_path: str
    top: list[Site] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)


def _frame(frame: tuple[str, str, int]) -> str:
    function, filename, line = frame
    with contextlib.suppress(ValueError):
        filename = str(Path(filename).resolve().relative_to(ROOT))
    return f"{function} {filename}:{line}"


def _own_code(filename: str) -> bool:
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return False
    return rel.parts[0] in ("shared", "workers", "supervisor") if rel.parts else False


def top_sites(bin_path: Path, n: int = 5) -> list[Site]:
    """The biggest allocation stacks alive at the peak, with the repository line that
    led to each (that is the line to fix when a stage grows)."""
    import memray

    reader = memray.FileReader(bin_path)
    records = sorted(
        reader.get_high_watermark_allocation_records(merge_threads=True),
        key=lambda r: r.size,
        reverse=True,
    )
    sites = []
    for record in records[:n]:
        try:
            stack = record.stack_trace()
        except NotImplementedError:
            continue
        if not stack:
            continue
        own = next((f for f in stack if _own_code(f[1])), None)
        sites.append(
            Site(
                mb=round(record.size / MB, 2),
                allocations=record.n_allocations,
                where=_frame(stack[0]),
                caller=_frame(own) if own else "-",
            )
        )
    return sites


def measure(
    name: str, fn: Callable[[], T], bin_path: Path, *, aggregated: bool = False
) -> tuple[T, Peak]:
    """Run ``fn`` under a memray Tracker; its peak counts only what ``fn`` allocated."""
    # Imported here, not at the top: the measured worker process (``_worker``) imports
    # this module too, and memray is no part of a real worker's memory.
    import memray

    bin_path.parent.mkdir(parents=True, exist_ok=True)
    bin_path.unlink(missing_ok=True)
    # Garbage of earlier steps must not be freed (or counted) inside the measurement.
    gc.collect()
    fmt = (
        memray.FileFormat.AGGREGATED_ALLOCATIONS
        if aggregated
        else memray.FileFormat.ALL_ALLOCATIONS
    )
    started = time.perf_counter()
    with memray.Tracker(bin_path, file_format=fmt):
        result = fn()
    seconds = time.perf_counter() - started
    meta = memray.FileReader(bin_path).metadata
    peak = Peak(name, round(meta.peak_memory / MB, 2), round(seconds, 2), str(bin_path))
    peak.top = top_sites(bin_path)
    return result, peak


def write_reports(bin_path: Path) -> dict[str, str]:
    """``memray stats`` (text and JSON) and ``memray flamegraph`` for one capture."""
    base = bin_path.with_suffix("")
    stats_txt = base.with_name(base.name + ".stats.txt")
    stats_json = base.with_name(base.name + ".stats.json")
    flame = base.with_name(base.name + ".flamegraph.html")
    memray_cli = [sys.executable, "-m", "memray"]
    with stats_txt.open("w") as fh:
        subprocess.run([*memray_cli, "stats", "-n", "10", str(bin_path)], stdout=fh, check=True)
    subprocess.run(
        [*memray_cli, "stats", "--json", "-f", "-o", str(stats_json), str(bin_path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*memray_cli, "flamegraph", "-f", "-o", str(flame), str(bin_path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"stats": str(stats_txt), "stats_json": str(stats_json), "flamegraph": str(flame)}


# -- database and embedder ---------------------------------------------------------------


class Environment:
    """An embedded PostgreSQL (one fresh database per measured document) and the
    embedder: the OpenAI emulator as its own process, or the hash embedder."""

    def __init__(self, embedder: str, database_url: str | None = None) -> None:
        if embedder not in ("openai", "hash"):
            raise SystemExit(f"unknown embedder {embedder!r}; expected openai or hash")
        self.embedder = embedder
        self._tmp = scratch_dir("ingestd-memory-")
        self.admin_url = database_url or embedded_url(self._tmp / "db")
        self._emulator: subprocess.Popen[str] | None = None
        self.api_url: str | None = None
        self._databases: list[str] = []

    def __enter__(self) -> Environment:
        # Loaded once per worker process and kept (~38 MB): a fixed cost, counted in the
        # worker's "ready" USS, not in the first stage measured here.
        get_encoding()
        if self.embedder == "openai":
            self._emulator, self.api_url = start_emulator()
        return self

    def __exit__(self, *exc: object) -> None:
        for url in list(self._databases):
            self.drop(url)
        if self._emulator is not None:
            self._emulator.terminate()
            self._emulator.wait(10)

    def database(self) -> str:
        url = fresh_database(self.admin_url)
        self._databases.append(url)
        return url

    def drop(self, url: str) -> None:
        """Drop a measured database at once: a 100 MB document leaves ~1 GB behind."""
        drop_database(self.admin_url, url)
        if url in self._databases:
            self._databases.remove(url)

    def environ(self, url: str) -> dict[str, str]:
        env = {
            "INGESTD_HOME": str(self._tmp / "home"),
            "INGESTD_DATABASE_URL": url,
            "INGESTD_EMBEDDER": self.embedder,
        }
        if self.embedder == "openai":
            assert self.api_url is not None
            env.update(OPENAI_API_KEY=DEFAULT_API_KEY, OPENAI_BASE_URL=self.api_url)
        return env

    def settings(self, url: str) -> Settings:
        return load_settings(environ=self.environ(url))


# -- stages, one at a time --------------------------------------------------------------


class Pipeline:
    """One document in its own database, claimed by this process and moved through the
    real stage functions one call at a time, so that each can be measured alone."""

    def __init__(self, env: Environment, doc: Input) -> None:
        self.url = env.database()
        self.settings = env.settings(self.url)
        self.embedder = build_embedder(self.settings)
        self.conn = connect(self.url, autocommit=True, application_name="ingestd-profile")
        ensure_space(self.conn, space_for(self.settings))
        result = ingest_file(self.conn, doc.path)
        if result.document_id is None:
            raise RuntimeError(f"ingest of {doc.path} failed: {result.error}")
        self.doc_id = result.document_id
        self.owner = f"profile:{os.getpid()}:0:0"
        self._claim()

    def _claim(self) -> None:
        claimed = jobs.claim(
            self.conn,
            self.owner,
            limit=1,
            lease_seconds=self.settings.lease_seconds,
        )
        if [c.id for c in claimed] != [self.doc_id]:
            raise RuntimeError(f"expected to claim {self.doc_id}, got {claimed}")

    def context(self, expected: str) -> StageContext:
        doc = self.conn.execute("SELECT * FROM documents WHERE id = %s", (self.doc_id,)).fetchone()
        assert doc is not None
        if doc["status"] != expected:
            raise RuntimeError(
                f"document is {doc['status']!r}, expected {expected!r} "
                f"({doc['error_class']}: {doc['error_message']})"
            )
        return StageContext(
            conn=self.conn,
            settings=self.settings,
            owner=self.owner,
            doc=doc,
            status=Status(doc["status"]),
            metrics=Metrics(None, role="worker"),
            embedder_factory=lambda: self.embedder,
        )

    def parse(self) -> str:
        return str(parse.run(self.context("parsing")))

    def chunk(self) -> str:
        return str(chunk.run(self.context("chunking")))

    def batch(self) -> dict[str, int]:
        """What the embed stage packs, without calling the API: chunks streamed from the
        table into ``shared.batching.pack`` with the stage's limits."""
        ctx = self.context("embedding")
        rows = chunks.iter_unembedded(
            self.conn, self.doc_id, ctx.doc["chunker"], ctx.doc["chunker_version"]
        )
        items = (BatchItem(r.ordinal, r.text, r.token_count) for r in rows)
        batches = inputs = largest = heaviest = 0
        for b in pack(items, embed.limits_for(ctx.settings, self.embedder)):
            batches += 1
            inputs += len(b)
            largest = max(largest, len(b))
            heaviest = max(heaviest, batch_weight(b))
        return {"batches": batches, "inputs": inputs, "largest": largest, "heaviest": heaviest}

    def write(self) -> str:
        return str(embed.run(self.context("embedding")))

    def finalize(self) -> str:
        status = str(finalize.run(self.context("finalizing")))
        if status != "complete":
            raise RuntimeError(f"document ended {status!r}, not complete")
        return status

    def close(self) -> None:
        close_runner(self.embedder)
        self.conn.close()


def _capture(scenario: str, doc: Input, sweep: bool) -> Path:
    sub = MEMRAY_DIR / "sweep" if sweep else MEMRAY_DIR
    return sub / f"{scenario}-{doc.label}.bin"


def measure_stages(
    env: Environment, doc: Input, stages: tuple[str, ...], *, sweep: bool = False
) -> dict[str, Peak]:
    """Run every stage up to the last of ``stages``; measure the ones in ``stages``."""
    pipeline = Pipeline(env, doc)
    peaks: dict[str, Peak] = {}
    try:
        last = max(STAGES.index(s) for s in stages)
        for stage in STAGES[: last + 1]:
            fn = getattr(pipeline, stage)
            if stage in stages:
                _, peaks[stage] = measure(stage, fn, _capture(stage, doc, sweep), aggregated=sweep)
            else:
                fn()
        if "write" in stages:
            pipeline.finalize()  # proves the measured run did the whole job
    finally:
        pipeline.close()
        env.drop(pipeline.url)
    return peaks


def measure_worker_inprocess(env: Environment, doc: Input) -> Peak:
    """A whole Worker (claim → parse → chunk → embed → finalize) under memray."""
    url = env.database()
    settings = env.settings(url)
    embedder = build_embedder(settings)
    with connect(url, autocommit=True) as conn:
        doc_id = ingest_file(conn, doc.path).document_id
        worker = Worker(
            settings, url=url, owner=f"profile:{os.getpid()}:0:0", embedder_factory=lambda: embedder
        )
        try:
            _, peak = measure(
                "worker", lambda: worker.run(until_idle=True), _capture("worker", doc, sweep=False)
            )
        finally:
            close_runner(embedder)
            worker.close()
        _require_complete(conn, doc_id)
    env.drop(url)
    return peak


def _require_complete(conn: Any, doc_id: Any) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, error_class, error_message, chunks_total, pages FROM documents"
        " WHERE id = %s",
        (doc_id,),
    ).fetchone()
    if row is None or row["status"] != "complete":
        raise RuntimeError(f"document did not complete: {row}")
    return dict(row)


# -- a worker as its own process ---------------------------------------------------------


class USSSampler(threading.Thread):
    """Samples one process's USS (what killing it would free) until it exits."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_uss = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                uss = self.process.memory_full_info().uss
            except psutil.Error:
                return
            self.peak_uss = max(self.peak_uss, uss)
            self.samples += 1
            self.done.wait(self.interval)


def measure_worker_process(env: Environment, doc: Input) -> dict[str, Any]:
    """Run a real worker process on ``doc`` and report its peak USS and RSS."""
    url = env.database()
    with connect(url, autocommit=True) as conn:
        doc_id = ingest_file(conn, doc.path).document_id
        environ = {**os.environ, **env.environ(url), "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "profiling.memory", "_worker"],
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        sampler = USSSampler(proc.pid)
        sampler.start()
        assert proc.stdout is not None
        lines = proc.stdout.read().splitlines()
        code = proc.wait()
        sampler.done.set()
        sampler.join()
        seconds = time.perf_counter() - started
        if code != 0 or not lines:
            raise RuntimeError(f"worker process exited with {code}")
        child = json.loads(lines[-1])
        row = _require_complete(conn, doc_id)
    env.drop(url)
    return {
        "peak_uss_mb": round(sampler.peak_uss / MB, 1),
        "ready_uss_mb": child["ready_uss_mb"],
        "peak_rss_mb": child["peak_rss_mb"],
        "samples": sampler.samples,
        "seconds": round(seconds, 1),
        "chunks": row["chunks_total"],
    }


def _worker_child() -> None:
    """The worker process of ``measure_worker_process`` (settings from the environment)."""
    settings = load_settings()
    owner = f"profile:{os.getpid()}:0:0"
    with daemon_like_worker(settings, database_url(settings), owner) as worker:
        get_encoding()  # what every worker holds; part of "ready", not of a document
        ready_uss = psutil.Process().memory_full_info().uss
        worker.run(until_idle=True)
    peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "ready_uss_mb": round(ready_uss / MB, 1),
                "peak_rss_mb": round(peak_rss_kb / 1024, 1),
                "documents": worker.documents_done,
            }
        ),
        flush=True,
    )


# -- the sweep -------------------------------------------------------------------------


def sweep(
    sizes: list[str],
    pdf_pages: tuple[int, ...] | list[int],
    *,
    embedder: str = "openai",
    kind: str = "text",
    database_url: str | None = None,
    json_path: Path | None = MEMORY_JSON,
) -> dict[str, Any]:
    docs = [make_input(kind, size=parse_size(s)) for s in sizes]
    docs += [make_input("pdf", pages=p) for p in pdf_pages]
    rows = []
    print(_table_header(), flush=True)
    with Environment(embedder, database_url) as env:
        for doc in docs:
            peaks = measure_stages(env, doc, STAGES, sweep=True)
            worker = measure_worker_process(env, doc)
            row = {
                "document": doc.label,
                "kind": doc.kind,
                "bytes": doc.size,
                "pages": doc.pages,
                "stages": {name: asdict(p) for name, p in peaks.items()},
                "worker": worker,
            }
            rows.append(row)
            print(_table_row(row), flush=True)
    result = {
        "embedder": embedder,
        "rows": rows,
        "targets": {
            "worker_peak_uss_mb": WORKER_USS_TARGET_MB,
            "flat": f"peak(largest) - peak(next) <= max({FLAT_SLACK_MB} MB, "
            f"{FLAT_PER_DOCUMENT_MB} x extra document MB)",
        },
        "verdict": verdict(rows),
    }
    _print_verdict(result["verdict"])
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    return result


def _table_header() -> str:
    cols = "".join(f"{s:>8}" for s in STAGES)
    return (
        f"{'document':<16}{'bytes':>11}{cols}{'worker USS':>12}{'ready':>8}{'RSS':>8}{'s':>7}"
        "\n" + " " * 27 + "memray peak MB per stage".center(8 * len(STAGES)) + "  peak, process MB"
    )


def _table_row(row: dict[str, Any]) -> str:
    cols = "".join(f"{row['stages'][s]['peak_mb']:>8.1f}" for s in STAGES)
    w = row["worker"]
    return (
        f"{row['document']:<16}{row['bytes']:>11}{cols}{w['peak_uss_mb']:>12.1f}"
        f"{w['ready_uss_mb']:>8.1f}{w['peak_rss_mb']:>8.1f}{w['seconds']:>7.0f}"
    )


def _growth(base: dict[str, Any], top: dict[str, Any]) -> list[dict[str, Any]]:
    allowed_per_mb = FLAT_PER_DOCUMENT_MB * (top["bytes"] - base["bytes"]) / MB
    found = []

    def check(what: str, lo: float, hi: float, sites: list[Any]) -> None:
        if hi - lo > max(FLAT_SLACK_MB, allowed_per_mb):
            found.append(
                {
                    "what": what,
                    "from": base["document"],
                    "to": top["document"],
                    "from_mb": round(lo, 1),
                    "to_mb": round(hi, 1),
                    "sites": sites,
                }
            )

    for stage in STAGES:
        check(
            f"stage {stage}",
            base["stages"][stage]["peak_mb"],
            top["stages"][stage]["peak_mb"],
            top["stages"][stage]["top"],
        )
    check(
        "worker process (USS above ready)",
        base["worker"]["peak_uss_mb"] - base["worker"]["ready_uss_mb"],
        top["worker"]["peak_uss_mb"] - top["worker"]["ready_uss_mb"],
        [],
    )
    return found


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Is each curve flat, and is the worker under its target? Names the allocation
    sites of anything that grows, from memray's high-water mark."""
    out: dict[str, Any] = {"growing": [], "flat_judged": [], "worker_target_met": None}
    texts = sorted((r for r in rows if r["kind"] != "pdf"), key=lambda r: r["bytes"])
    pdfs = sorted((r for r in rows if r["kind"] == "pdf"), key=lambda r: r["bytes"])
    if len(texts) >= 2 and texts[-2]["bytes"] >= FLAT_MIN_BYTES:
        out["flat_judged"].append(f"{texts[-2]['document']} -> {texts[-1]['document']}")
        out["growing"] += _growth(texts[-2], texts[-1])
    if len(pdfs) >= 2:
        out["flat_judged"].append(f"{pdfs[-2]['document']} -> {pdfs[-1]['document']}")
        out["growing"] += _growth(pdfs[-2], pdfs[-1])
    if texts and texts[-1]["bytes"] >= 100 * MB:
        out["worker_peak_uss_mb_largest"] = texts[-1]["worker"]["peak_uss_mb"]
        out["worker_target_met"] = out["worker_peak_uss_mb_largest"] <= WORKER_USS_TARGET_MB
    return out


def _print_verdict(v: dict[str, Any]) -> None:
    if v.get("worker_target_met") is not None:
        ok = "met" if v["worker_target_met"] else "MISSED"
        print(
            f"worker peak USS on the largest document: {v['worker_peak_uss_mb_largest']} MB "
            f"(target <= {WORKER_USS_TARGET_MB:.0f} MB: {ok})"
        )
    if not v["flat_judged"]:
        print(
            "flatness not judged: needs two text sizes of at least "
            f"{size_label(FLAT_MIN_BYTES)}, or two PDFs"
        )
    elif not v["growing"]:
        print(f"flat ({'; '.join(v['flat_judged'])}): nothing grows with document size")
    for g in v["growing"]:
        print(
            f"GROWS: {g['what']}: {g['from_mb']} MB at {g['from']} -> {g['to_mb']} MB at {g['to']}"
        )
        for s in g["sites"][:3]:
            print(f"    {s['mb']:>8.2f} MB  {s['where']}  (from {s['caller']})")


# -- command line ------------------------------------------------------------------------


def _print_peak(peak: Peak) -> None:
    print(
        f"{peak.name}: peak {peak.peak_mb:.2f} MB (memray, heap allocated by the stage) "
        f"in {peak.seconds:.1f} s"
    )
    print("  biggest allocations alive at the peak:")
    for s in peak.top:
        print(f"    {s.mb:>8.2f} MB {s.allocations:>6} allocs  {s.where}  (from {s.caller})")
    print(f"  capture: {peak.bin_path}")
    for name, path in peak.reports.items():
        print(f"  {name}: {path}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m profiling.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("scenario", choices=[*STAGES, "worker", "sweep", "_worker"])
    ap.add_argument(
        "--kind",
        choices=KINDS,
        default="text",
        help="document kind for a stage/worker scenario, or the sweep's kind",
    )
    ap.add_argument("--size", default="10MB", help="document size (text kinds), e.g. 100KB")
    ap.add_argument("--pages", type=int, default=PDF_PAGES, help="pages (--kind pdf)")
    ap.add_argument("--sizes", nargs="+", help=f"sweep sizes (default {' '.join(SWEEP_SIZES)})")
    ap.add_argument(
        "--pdf-pages",
        type=int,
        nargs="*",
        help="sweep PDFs, pages of each "
        f"(default {' '.join(map(str, SWEEP_PDF_PAGES))}; none: no PDF)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"sweep {' '.join(QUICK_SIZES)} and a {QUICK_PDF_PAGES[0]}-page PDF",
    )
    ap.add_argument("--embedder", choices=["openai", "hash"], default="openai")
    ap.add_argument("--database-url", help="server to use (default: embedded, in a temp dir)")
    ap.add_argument(
        "--no-reports",
        action="store_true",
        help="skip memray stats/flamegraph (stage and worker scenarios)",
    )
    ap.add_argument(
        "--json", type=Path, help=f"sweep: where to write (default {MEMORY_JSON.relative_to(ROOT)})"
    )
    args = ap.parse_args(argv)

    if args.scenario == "_worker":
        _worker_child()
        return {}
    if args.scenario == "sweep":
        sizes = args.sizes or list(QUICK_SIZES if args.quick else SWEEP_SIZES)
        pages = (
            args.pdf_pages
            if args.pdf_pages is not None
            else (QUICK_PDF_PAGES if args.quick else SWEEP_PDF_PAGES)
        )
        return sweep(
            sizes,
            pages,
            embedder=args.embedder,
            kind=args.kind,
            database_url=args.database_url,
            json_path=args.json or MEMORY_JSON,
        )

    doc = make_input(args.kind, size=parse_size(args.size), pages=args.pages)
    print(f"document: {doc.label} ({doc.size} bytes) at {doc.path}", flush=True)
    with Environment(args.embedder, args.database_url) as env:
        if args.scenario == "worker":
            peak = measure_worker_inprocess(env, doc)
        else:
            peak = measure_stages(env, doc, (args.scenario,))[args.scenario]
    if not args.no_reports:
        peak.reports = write_reports(Path(peak.bin_path))
    _print_peak(peak)
    return asdict(peak)


if __name__ == "__main__":
    main()
