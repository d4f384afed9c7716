"""The systemd unit installed on this host (systemd/ingestd.service in the repository
is only a template): does it start a binary that exists, with an environment file
that exists?"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ingestd.supervisor.doctor.findings import Result, fail, ok, skip, warn
from ingestd.supervisor.doctor.runner import Context

UNIT = "ingestd.service"
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)
# ExecStart's special prefixes (systemd.service(5), "Command lines").
_EXEC_PREFIXES = "-@:+!"


def installed_unit(timeout: float) -> tuple[str, str] | None:
    """(where it was found, its text with drop-ins) or None when not installed."""
    if shutil.which("systemctl"):
        try:
            done = subprocess.run(
                ["systemctl", "cat", UNIT],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            return "systemctl cat ingestd", done.stdout
    # No running systemd (a container, a chroot): the unit may still be installed.
    for directory in UNIT_DIRS:
        path = directory / UNIT
        if path.is_file():
            return str(path), path.read_text(encoding="utf-8", errors="replace")
    return None


def _values(text: str, key: str) -> list[str]:
    """Every value of ``key`` in [Service], in order; an empty assignment resets the list."""
    values: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        name, eq, value = line.partition("=")
        if eq and section == "[Service]" and name.strip() == key:
            value = value.strip()
            values = [*values, value] if value else []
    return values


def check_unit(ctx: Context) -> Result:
    if ctx.options.unit is not None:
        path = ctx.options.unit
        if not path.is_file():
            return fail(f"{path} is not a file", "give --unit the path of a unit file")
        found: tuple[str, str] | None = (str(path), path.read_text(encoding="utf-8"))
    else:
        found = installed_unit(ctx.options.timeout)
    if found is None:
        return skip("ingestd.service is not installed on this host")
    where, text = found
    facts = {"unit": where}
    starts = _values(text, "ExecStart")
    if not starts:
        return fail(
            f"{where} has no ExecStart", "install systemd/ingestd.service from the repository"
        )
    argv = shlex.split(starts[-1].lstrip(_EXEC_PREFIXES))
    binary = argv[0] if argv else ""
    if not os.path.isabs(binary):
        return fail(
            f"{where}: ExecStart runs {binary!r}, not an absolute path",
            "name the virtualenv's entry point, e.g. /opt/ingestd/.venv/bin/ingestd run",
            **facts,
        )
    if not os.access(binary, os.X_OK):
        return fail(
            f"{where}: ExecStart binary {binary} does not exist or is not executable",
            f"install ingestd there (python3 -m venv {Path(binary).parents[1]} && "
            f"{Path(binary).parent}/pip install ingestd), or correct ExecStart",
            **facts,
        )
    env_files = _values(text, "EnvironmentFile")
    missing = [f for f in env_files if not Path(f.lstrip("-")).is_file()]
    required = [f for f in missing if not f.startswith("-")]
    if required:
        return fail(
            f"{where}: EnvironmentFile {required[0]} does not exist (the unit will not start)",
            "install -m 0640 -o root -g ingestd systemd/ingestd.env.example " + required[0],
            **facts,
        )
    if missing or not env_files:
        file = missing[0].lstrip("-") if missing else None
        return warn(
            f"{where}: starts {binary}, but "
            + (
                f"its EnvironmentFile {file} does not exist"
                if file
                else "it reads no EnvironmentFile"
            ),
            "install -m 0640 -o root -g ingestd systemd/ingestd.env.example "
            + (file or "/etc/ingestd/ingestd.env"),
            **facts,
        )
    return ok(
        f"{where}: starts {binary} with {', '.join(f.lstrip('-') for f in env_files)}", **facts
    )
