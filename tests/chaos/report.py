"""The chaos suite's tables: ``python -m tests.chaos.report`` prints those of the last run
(``--run`` runs ``pytest -m chaos`` first). Rows come from ``tests.chaos.results``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from tests.chaos import results

SCENARIO_COLUMNS = (
    "scenario", "faults", "documents", "complete", "failed", "dead", "unfinished",
    "violations", "recover_s",
)  # fmt: skip
HOSTILE_COLUMNS = ("door", "input", "outcome", "reason", "attempts", "seconds", "peak_uss_mb")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if "--run" in argv:
        subprocess.run([sys.executable, "-m", "pytest", "-m", "chaos", "tests/chaos"], check=False)
    rows = results.load()
    if not rows:
        print(f"no results in {results.path()}; run with --run", file=sys.stderr)
        return 1
    print(table([r for r in rows if r["table"] == "scenarios"], SCENARIO_COLUMNS))
    print()
    print(table([r for r in rows if r["table"] == "hostile"], HOSTILE_COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
