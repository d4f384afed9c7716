"""End to end with the real offline model: a sentence from a document finds that document."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.ingest import ingest_file
from tests.workers.support import run_worker

DOCS = {
    "volcano.md": "# Volcanoes\n\nMagma rises through the crust and erupts as lava. Basalt "
    "flows cool into black rock, and ash clouds can ground aircraft for days.\n\n"
    "## Monitoring\n\nSeismometers record tremors before an eruption.",
    "bread.md": "# Baking bread\n\nMix flour, water, salt and yeast, then knead the dough "
    "until it is smooth. Let it rise twice before baking in a hot oven.\n\n"
    "## Sourdough\n\nA starter culture of wild yeast leavens sourdough loaves.",
    "chess.md": "# Chess openings\n\nThe Sicilian Defence answers 1.e4 with c5. White often "
    "plays the Open Sicilian with Nf3 and d4.\n\n## Endgames\n\nKing and pawn endings "
    "reward precise counting of tempi.",
}


@pytest.mark.slow
def test_search_ranks_the_source_document_first(
    conn, db_url, make_settings, cli_env, tmp_path
) -> None:
    settings = make_settings(embedder="local")
    ids = {}
    for name, text in DOCS.items():
        p = tmp_path / name
        p.write_text(text)
        ids[name] = str(ingest_file(conn, p).document_id)
    run_worker(settings, db_url, build_embedder(settings), owner="search:1:0:0")
    statuses = {r["status"] for r in conn.execute("SELECT status FROM documents")}
    assert statuses == {"complete"}
    model = conn.execute("SELECT DISTINCT embedding_model FROM chunks").fetchall()
    assert [r["embedding_model"] for r in model] == ["all-MiniLM-L6-v2"]

    env = {**cli_env, "INGESTD_EMBEDDER": "local"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ingestd.supervisor.cli",
            "search",
            "--json",
            "-k",
            "3",
            "knead the dough and let it rise",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert hits and hits[0]["document_id"] == ids["bread.md"]
    assert hits[0]["distance"] < hits[-1]["distance"]
