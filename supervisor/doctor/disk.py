"""Free disk space under a directory, judged against the operator's threshold."""

from __future__ import annotations

import shutil
from pathlib import Path

from ingestd.supervisor.doctor.findings import Result, ok, warn

_MB = 1024 * 1024


def free_space(path: Path, min_free_mb: int, *, what: str) -> Result:
    """Free space on the file system holding ``path`` (or, before it exists, the
    nearest existing parent: where it will be created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free // _MB
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    note = "" if probe == path else f" (not created yet; {probe} is)"
    facts = {"path": str(path), "free_mb": int(free_mb), "free_percent": round(pct, 1)}
    text = f"{_human(usage.free)} free ({pct:.0f}%) under {what} {path}{note}"
    if free_mb < min_free_mb:
        return warn(
            text,
            f"free space there (below the {min_free_mb} MB threshold, --min-free-mb)",
            **facts,
        )
    return ok(text, **facts)


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
