"""The committed env example and README table are what the settings render (no drift)."""

from __future__ import annotations

from pathlib import Path

from ingestd.shared.settings import Settings, env_name
from ingestd.shared.settings_docs import (
    COMMAND,
    ENV_EXAMPLE,
    FILE_ONLY_KEYS,
    README,
    TABLE_END,
    TABLE_START,
    UNIT_VALUES,
    rendered_files,
)

ROOT = Path(__file__).resolve().parents[2]


def test_committed_env_example_and_readme_table_are_up_to_date() -> None:
    for path, expected in rendered_files(ROOT).items():
        assert path.read_text(encoding="utf-8") == expected, (
            f"{path.relative_to(ROOT)} differs from what shared/settings.py renders: "
            f"run `{COMMAND}` and commit the result"
        )


def test_every_setting_appears_in_both_committed_files() -> None:
    env = (ROOT / ENV_EXAMPLE).read_text(encoding="utf-8")
    readme = (ROOT / README).read_text(encoding="utf-8")
    table = readme[readme.index(TABLE_START) : readme.index(TABLE_END)]
    variables = {line.lstrip("#").partition("=")[0] for line in env.splitlines() if "=" in line}
    for key in Settings.model_fields:
        assert f"| `{key}` |" in table, f"{key} is not in the README table"
        if key in FILE_ONLY_KEYS:
            assert env_name(key) in env, f"{env_name(key)} is not in {ENV_EXAMPLE}"
        else:
            assert env_name(key) in variables, f"{env_name(key)} has no line in {ENV_EXAMPLE}"


def test_values_the_example_attributes_to_the_unit_are_the_units() -> None:
    unit = (ROOT / "systemd" / "ingestd.service").read_text(encoding="utf-8").splitlines()
    for key, (value, _why) in UNIT_VALUES.items():
        assert f"Environment={env_name(key)}={value}" in unit, key
