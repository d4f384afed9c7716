"""Hostile input through both doors, ``ingestd ingest DIR`` and ``POST /v1/documents``:
each input ends clearly (complete, failed with a classified reason, or refused at ingest
in one line), the ordinary documents beside them complete, and the invariants hold.
Each input's outcome, time and the worker's peak USS go to the report."""

from __future__ import annotations

import shutil
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import results
from tests.chaos.daemon import Daemon, Scene, wait_until
from tests.chaos.hostile import files, write_tree
from tests.supervisor.http.http_harness import ADMIN_TOKEN, add_token, multipart, request

pytestmark = [pytest.mark.chaos, pytest.mark.db]

CORPUS = (10, 0)
ENDED = ("complete", "failed", "dead")


class PeakUss:
    """Samples worker_status (what the supervisor publishes) for each document's peak."""

    def __init__(self, scene: Scene) -> None:
        self.peaks: dict[str, int] = {}
        self._scene = scene
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakUss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self._scene.conn() as c:
            while not self._stop.wait(0.1):
                for row in c.execute(
                    "SELECT document_id::text AS d, uss_bytes FROM worker_status"
                    " WHERE document_id IS NOT NULL AND uss_bytes IS NOT NULL"
                ):
                    self.peaks[row["d"]] = max(self.peaks.get(row["d"], 0), row["uss_bytes"])


def _outcomes(scene: Scene, door: str, peaks: dict[str, int], names: set[str]) -> list[dict]:
    with scene.conn() as c:
        docs = c.execute(
            "SELECT id::text AS id, filename, status::text AS status, error_class,"
            " error_message, attempts,"
            " extract(epoch FROM coalesce(completed_at, updated_at) - created_at) AS seconds"
            " FROM documents"
        ).fetchall()
    rows = []
    for d in docs:
        if d["filename"] not in names:
            assert d["status"] == "complete", d  # the ordinary documents of the same run
            continue
        uss = peaks.get(d["id"])
        rows.append(
            {
                "door": door,
                "input": repr(d["filename"]),
                "outcome": d["status"],
                "reason": d["error_class"],
                "message": (d["error_message"] or "")[:80],
                "attempts": d["attempts"],
                "seconds": round(float(d["seconds"]), 2),
                "peak_uss_mb": round(uss / 2**20) if uss else None,
            }
        )
    return rows


def test_hostile_files_through_the_cli(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    tree = scene.dir / "tree"
    shutil.copytree(corpus, tree)
    catalogue = write_tree(tree)
    done = scene.cli("ingest", str(tree), timeout=60)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    refusals = [line for line in done.stderr.splitlines() if line.startswith("ingestd: ")]
    for line in refusals:
        assert "\x1b" not in line and "\x07" not in line, repr(line)  # nothing raw
    with PeakUss(scene) as sampler:
        daemon = scene.start(env={"INGESTD_WORKERS": "1"})
        assert daemon.wait() == 0, daemon.tail()
    with scene.conn() as c:
        stored = {r["filename"] for r in c.execute("SELECT filename FROM documents")}
    # Out of the tree, or not a file: never stored.
    assert not {"passwd.txt", "fifo.txt", "back"} & stored, stored
    rows = _outcomes(scene, "cli", sampler.peaks, set(catalogue))
    for name in ("fifo.txt", "passwd.txt", "loop/back"):
        said = [
            line for line in done.stdout.splitlines() + done.stderr.splitlines() if name in line
        ]
        rows.append({"door": "cli", "input": name, "outcome": "not stored", "reason": said[:1]})
    for row in rows:
        results.record("hostile", row)
    assert all(r["outcome"] in (*ENDED, "not stored") for r in rows), rows
    verify(reference, faults=f"{len(catalogue) + 3} hostile inputs via the CLI")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hostile_files_through_the_upload_route(
    scene: Scene, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    port = _free_port()
    with scene.conn() as c:
        add_token(c, ADMIN_TOKEN, name="chaos-admin")
    catalogue = files()
    with PeakUss(scene) as sampler:
        daemon: Daemon = scene.start(
            drain=False, env={"INGESTD_WORKERS": "1", "INGESTD_HTTP_PORT": str(port)}
        )
        url = f"http://127.0.0.1:{port}/v1/documents"
        wait_until(lambda: _up(port), "the HTTP API", tail=daemon)
        answers = {}
        for name, data in catalogue.items():
            body, headers = multipart(data, name.replace('"', "_"))
            reply = request("POST", url, data=body, headers=headers)
            answers[name] = reply.status
            assert reply.status in (201, 202, 400, 413, 415, 422), (name, reply.status, reply.body)

        def all_ended() -> bool:
            counts = scene.counts()
            return sum(counts.get(s, 0) for s in ENDED) == sum(counts.values())

        wait_until(all_ended, "every upload to end", tail=daemon)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.tail()
    rows = _outcomes(scene, "upload", sampler.peaks, set(catalogue))
    refused = {n for n, s in answers.items() if s >= 400}
    for name in refused:
        rows.append({"door": "upload", "input": repr(name), "outcome": f"HTTP {answers[name]}"})
    for row in rows:
        results.record("hostile", row)
    assert len(rows) == len(catalogue)
    verify(reference, faults=f"{len(catalogue)} hostile uploads")


def _up(port: int) -> bool:
    try:
        return request("GET", f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
    except OSError:
        return False
