"""The built wheel installs one import package, ``ingestd``, and ships what a host runs.

Three generic top-level names (``shared``, ``workers``, ``supervisor``) used to be installed;
``supervisor`` is Supervisord's import package, so installing both made one overwrite the other.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("shared", "workers", "supervisor")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ beside the sources it builds.
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for layer in LAYERS:
        shutil.copytree(ROOT / layer, src / layer, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        cwd=out,
    )
    (path,) = out.glob("ingestd-*.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(member).decode()


def test_only_top_level_import_name_is_ingestd(wheel: zipfile.ZipFile) -> None:
    assert _dist_info(wheel, "top_level.txt").split() == ["ingestd"]
    tops = {n.split("/", 1)[0] for n in wheel.namelist() if ".dist-info/" not in n}
    assert tops == {"ingestd"}
    recorded = {
        line.split(",", 1)[0].split("/", 1)[0] for line in _dist_info(wheel, "RECORD").split()
    }
    assert {t for t in recorded if not t.endswith(".dist-info")} == {"ingestd"}


def test_every_source_package_and_data_file_ships(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    # A package added to the tree but not to pyproject's list would silently not ship.
    for layer in LAYERS:
        for init in (ROOT / layer).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"ingestd/{rel}" in names, f"{rel} is not in the wheel"
        assert f"ingestd/{layer}/py.typed" in names
    migrations = sorted(p.name for p in (ROOT / "shared/db/migrations").glob("*.sql"))
    assert migrations
    for name in migrations:
        assert f"ingestd/shared/db/migrations/{name}" in names
    # The Grafana dashboard and alert rules ship beside the metric catalogue they chart.
    grafana = sorted(p.name for p in (ROOT / "shared/telemetry/grafana").iterdir())
    assert grafana == ["alerts.yaml", "dashboard.json"]
    for name in grafana:
        assert f"ingestd/shared/telemetry/grafana/{name}" in names


def test_test_doubles_do_not_ship(wheel: zipfile.ZipFile) -> None:
    assert not [n for n in wheel.namelist() if "emulator" in n or n.startswith("tests/")]
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "ingestd = ingestd.supervisor.cli:main" in entry_points


def test_version_flag_names_the_installed_distribution() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "--version"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    from importlib.metadata import version

    assert out.strip() == f"ingestd {version('ingestd')}"
