"""The settings' documentation is rendered from the fields themselves, and says what is true."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.shared import settings_docs
from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import SECRET_KEYS, Settings, env_name, load_settings
from ingestd.shared.settings_docs import (
    FILE_ONLY_KEYS,
    GROUPS,
    TABLE_END,
    TABLE_START,
    UNIT_VALUES,
    Group,
    SettingsDocsError,
    main,
    render_env,
    render_readme_table,
    splice_readme,
)


def _env_lines() -> dict[str, str]:
    """Variable name -> the value its (commented-out) line shows."""
    lines = {}
    for line in render_env().splitlines():
        name, sep, value = line.lstrip("#").partition("=")
        if sep and name.isupper() and " " not in name:
            lines[name] = value
    return lines


def test_every_setting_has_a_line_in_the_env_example_and_a_row_in_the_table() -> None:
    lines = _env_lines()
    table = render_readme_table()
    for key in Settings.model_fields:
        assert f"| `{key}` |" in table, key
        if key in FILE_ONLY_KEYS:
            assert f"{env_name(key)} in the environment is refused" in render_env()
        else:
            assert env_name(key) in lines, key
            assert f"| `{env_name(key)}` |" in table, key


def test_each_line_shows_the_default_and_that_value_loads_as_the_default() -> None:
    lines = _env_lines()
    checked = 0
    for key, field in Settings.model_fields.items():
        shown = lines.get(env_name(key))
        if not shown or key in UNIT_VALUES:
            continue
        # The shown text, read back as the variable, is the field's default: the file
        # cannot claim a default the code does not have.
        settings = load_settings(environ={env_name(key): shown})
        assert getattr(settings, key) == field.default, key
        checked += 1
    assert checked >= 35
    # And an empty line stands for a default of None.
    for key, field in Settings.model_fields.items():
        if lines.get(env_name(key)) == "" and key not in SECRET_KEYS:
            assert field.default is None, key


def test_secrets_are_shown_empty_and_commented_out() -> None:
    text = render_env()
    for key in SECRET_KEYS:
        assert f"\n#{env_name(key)}=\n" in text, key


def test_file_only_keys_are_refused_by_the_environment() -> None:
    for key in FILE_ONLY_KEYS:
        with pytest.raises(ConfigError, match="TOML"):
            load_settings(environ={env_name(key): '{"m": 1}'})


def test_constraints_and_choices_come_from_the_fields() -> None:
    table = render_readme_table()
    assert "| `workers` | `INGESTD_WORKERS` | `2` | 1..256 |" in table
    assert "| `lease_seconds` | `INGESTD_LEASE_SECONDS` | `60` | > 0 |" in table
    assert (
        "| `embedder` | `INGESTD_EMBEDDER` | `auto` | one of auto, openai, local, hash |" in table
    )
    assert "| `log_json` | `INGESTD_LOG_JSON` | unset | true or false |" in table


def test_a_setting_outside_every_group_stops_the_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups = (*GROUPS[:-1], Group(GROUPS[-1].title, GROUPS[-1].keys[1:]))
    monkeypatch.setattr(settings_docs, "GROUPS", groups)
    dropped = GROUPS[-1].keys[0]
    for render in (render_env, render_readme_table):
        with pytest.raises(
            SettingsDocsError, match=f"in no group of settings_docs.GROUPS: {dropped}"
        ):
            render()


def test_a_setting_without_a_description_stops_the_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    field = Settings.model_fields["workers"]
    monkeypatch.setattr(field, "description", None)
    with pytest.raises(SettingsDocsError, match=r"without a description.*: workers"):
        render_env()


def test_splice_replaces_only_the_text_between_the_markers() -> None:
    readme = f"intro\n{TABLE_START}\nold table\n{TABLE_END}\noutro\n"
    assert splice_readme(readme, f"{TABLE_START}\nnew\n{TABLE_END}") == (
        f"intro\n{TABLE_START}\nnew\n{TABLE_END}\noutro\n"
    )


@pytest.mark.parametrize(
    "readme",
    [
        "no markers\n",
        f"{TABLE_END}\n{TABLE_START}\n",
        f"{TABLE_START}\n{TABLE_START}\n{TABLE_END}\n",
    ],
)
def test_splice_refuses_a_readme_without_one_ordered_marker_pair(readme: str) -> None:
    with pytest.raises(SettingsDocsError, match="needs exactly one"):
        splice_readme(readme, "table")


def _repo(tmp_path: Path, env: str, readme: str) -> Path:
    (tmp_path / "systemd").mkdir()
    (tmp_path / "systemd" / "ingestd.env.example").write_text(env)
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_check_names_stale_files_and_write_brings_them_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _repo(tmp_path, "# old\n", f"# ingestd\n\n{TABLE_START}\n| old |\n{TABLE_END}\nend\n")

    assert main(["check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "ingestd.env.example is out of date" in err
    assert "README.md is out of date" in err
    assert "python -m ingestd.shared.settings_docs write" in err

    assert main(["write", "--root", str(root)]) == 0
    assert main(["check", "--root", str(root)]) == 0
    assert (root / "systemd" / "ingestd.env.example").read_text() == render_env()
    readme = (root / "README.md").read_text()
    assert readme.startswith(f"# ingestd\n\n{TABLE_START}\n")
    assert readme.endswith(f"{TABLE_END}\nend\n")


def test_a_readme_without_markers_is_an_error_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _repo(tmp_path, "# old\n", "# ingestd\n")

    assert main(["write", "--root", str(root)]) == 2
    assert "needs exactly one" in capsys.readouterr().err
    assert (root / "systemd" / "ingestd.env.example").read_text() == "# old\n"
