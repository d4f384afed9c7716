"""Claim throughput: documents claimed per second, single and batched, under leases
with an event row per claim — on the embedded database by default.

    python -m profiling.bench_claims [--docs 20000] [--consumers 1 2] [--batches 1 10 50]

Prints a table; ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import psycopg

from ingestd.shared.db import jobs
from ingestd.shared.db.connect import connect
from profiling.scratch import scratch_database


def _fill(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("TRUNCATE documents CASCADE")
        c.execute(
            "INSERT INTO documents (id, content_sha256, source, filename, mime_type, size_bytes,"
            " correlation_id) SELECT gen_random_uuid(), md5(g::text) || g, 'bench', 'b.txt',"
            " 'text/plain', 1, gen_random_uuid() FROM generate_series(1, %s) g",
            (n,),
        )
        c.execute("VACUUM ANALYZE documents")


def _consume(url: str, owner: str, batch: int, barrier: Any, out: Any) -> None:
    conn = connect(url, autocommit=True)
    conn.execute("SET synchronous_commit = off")  # as a worker's session (workers/base.py)
    barrier.wait()
    started = time.perf_counter()
    n = 0
    while True:
        got = jobs.claim(conn, owner, limit=batch, lease_seconds=300)
        if not got:
            break
        n += len(got)
    out.put((n, time.perf_counter() - started))


def run_case(url: str, docs: int, consumers: int, batch: int) -> dict[str, Any]:
    _fill(url, docs)
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(consumers), ctx.Queue()
    procs = [
        ctx.Process(target=_consume, args=(url, f"bench{i}", batch, barrier, out))
        for i in range(consumers)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    claimed = sum(n for n, _ in results)
    wall = max(t for _, t in results)
    with psycopg.connect(url) as c:
        events = c.execute(
            "SELECT count(*) FROM document_events WHERE event = 'claimed'"
        ).fetchone()
    assert claimed == docs, f"claimed {claimed} of {docs}"
    assert events is not None and events[0] == docs
    return {
        "consumers": consumers,
        "batch": batch,
        "docs": docs,
        "seconds": round(wall, 3),
        "claims_per_second": round(claimed / wall),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--database-url", help="server to use (default: embedded, in a temp dir)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'consumers':>9} {'batch':>5} {'docs':>7} {'seconds':>8} {'claims/s':>9}")
    with scratch_database(args.database_url, "ingestd-bench-") as url:
        for consumers in args.consumers:
            for batch in args.batches:
                docs = args.docs if batch > 1 else min(args.docs, 10_000)
                r = run_case(url, docs, consumers, batch)
                rows.append(r)
                print(
                    f"{r['consumers']:>9} {r['batch']:>5} {r['docs']:>7} {r['seconds']:>8} "
                    f"{r['claims_per_second']:>9}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"claims": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
