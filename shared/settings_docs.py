"""The operator's documentation of the settings, rendered from ``Settings`` itself.

Two files restate the settings for readers who never open shared/settings.py: the
systemd environment file example and the README's configuration table. Both are
rendered here from each field's description, default and constraints, and a test fails
when a committed copy differs, so neither can drift. From the repository root:

    python -m ingestd.shared.settings_docs write    # regenerate both files
    python -m ingestd.shared.settings_docs check    # exit 1 naming each stale file
    python -m ingestd.shared.settings_docs env      # print the env example
    python -m ingestd.shared.settings_docs readme   # print the README table block
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo

from ingestd.shared.settings import FILE_ONLY_KEYS, SECRET_KEYS, Settings, env_name

COMMAND = "python -m ingestd.shared.settings_docs write"
ENV_EXAMPLE = Path("systemd/ingestd.env.example")
README = Path("README.md")
TABLE_START = "<!-- settings-table:start -->"
TABLE_END = "<!-- settings-table:end -->"
_WIDTH = 100


class SettingsDocsError(Exception):
    """The settings cannot be documented as they are, or a target file has no place for it."""


@dataclass(frozen=True)
class Group:
    title: str
    keys: tuple[str, ...]
    # Said once above the group in the env example: how the unit and systemd affect it.
    env_intro: str = ""


# Every field is in exactly one group (checked when rendering); the order is the files' order.
GROUPS: tuple[Group, ...] = (
    Group(
        "Embeddings (OpenAI or the local model)",
        (
            "openai_api_key",
            "openai_base_url",
            "embedder",
            "embedding_model",
            "embedding_dimensions",
            "openai_rpm",
            "openai_tpm",
            "openai_timeout_seconds",
            "batch_max_inputs",
            "batch_max_tokens",
            "embed_concurrency",
            "prices_per_million",
        ),
    ),
    Group(
        "LlamaParse (LlamaCloud)",
        (
            "parser",
            "llama_cloud_api_key",
            "llama_cloud_base_url",
            "public_url",
            "webhook_secret",
            "webhook_max_age_seconds",
            "parse_callback_timeout_seconds",
        ),
    ),
    Group(
        "ingestd core",
        ("home", "database_url", "workers", "http_host", "http_port", "max_upload_mb"),
    ),
    Group(
        "HTTP API: webhook listener, per-token limits, slow clients",
        (
            "webhook_host",
            "webhook_port",
            "api_rate_per_second",
            "api_rate_burst",
            "http_header_timeout_seconds",
            "http_body_floor_seconds",
            "http_body_min_rate_kib",
            "http_max_connections_per_ip",
            "http_max_connections",
        ),
    ),
    Group(
        "Chunking and the vector index",
        ("chunk_target_tokens", "chunk_overlap_tokens", "index_min_rows"),
    ),
    Group(
        "Queue: claims, leases, retries",
        (
            "claim_batch",
            "claim_max_bytes",
            "lease_seconds",
            "max_attempts",
            "retry_base_seconds",
            "retry_max_seconds",
            "service_wait_horizon_seconds",
            "poll_seconds",
        ),
    ),
    Group(
        "Supervisor: hung workers, memory, recycling, restarts",
        (
            "heartbeat_timeout_seconds",
            "stage_deadline_seconds",
            "budget_floor_seconds",
            "budget_seconds_per_mib",
            "budget_seconds_per_page",
            "budget_seconds_per_1k_tokens",
            "budget_ceiling_seconds",
            "drain_timeout_seconds",
            "drain_blocked_seconds",
            "memory_soft_mb",
            "memory_hard_mb",
            "memory_strikes",
            "memory_check_seconds",
            "recycle_after_documents",
            "recycle_after_seconds",
            "recycle_jitter",
            "restart_backoff_base_seconds",
            "restart_backoff_max_seconds",
            "crash_loop_limit",
            "crash_loop_window_seconds",
        ),
        env_intro="The unit's own limits (TimeoutStopSec=, MemoryMax=...) must leave room for "
        "these: see systemd/ingestd.service.",
    ),
    Group(
        "Logging",
        ("log_level", "log_json", "log_file"),
        env_intro="Under systemd stderr is the journal (not a terminal), so lines are JSON "
        "objects: query them with `journalctl -u ingestd -o cat | jq`. /var/log/ingestd is the "
        "unit's LogsDirectory=, the place for INGESTD_LOG_FILE.",
    ),
    Group(
        "Metrics (statsd)",
        ("statsd_host", "statsd_port", "statsd_prefix"),
        env_intro="Each process (supervisor, workers, HTTP child) sends its own UDP datagrams.",
    ),
    Group(
        "Error reporting (Sentry)",
        ("sentry_dsn", "sentry_environment"),
        env_intro="Events carry the tags role, worker_slot, stage, error_class, correlation_id "
        "and document_id.",
    ),
)

# Defaults computed at run time have no single value to show; each says what it is.
_COMPUTED_DEFAULTS = {
    "home": "$XDG_STATE_HOME/ingestd, else ~/.local/state/ingestd",
    "prices_per_million": "built-in table",
}


# Values systemd/ingestd.service sets with Environment=, and why; the example shows them,
# since they, not the built-in defaults, apply under the unit.
UNIT_VALUES = {
    "home": (
        "/var/lib/ingestd",
        "The unit sets INGESTD_HOME=/var/lib/ingestd (its StateDirectory=, the only writable "
        "place besides /var/log/ingestd); override it here only together with ReadWritePaths= "
        "in a drop-in.",
    ),
}

# Variables that are not settings but belong in the env example, after the given key.
_OTHER_VARIABLES = {
    "home": (
        "INGESTD_CONFIG",
        "Optional TOML configuration file, e.g. /etc/ingestd/ingestd.toml (keys as in the "
        "README's configuration table, top level or under [ingestd]); environment variables "
        "override its keys.",
    ),
}

_ENV_HEADER = f"""\
# /etc/ingestd/ingestd.env — environment for ingestd.service (EnvironmentFile=).
#
# Generated from the settings' descriptions in shared/settings.py by
# `{COMMAND}`: edit those, not this file.
#
# Install with owner root, group ingestd, mode 0640: it holds API keys.
# systemd syntax: KEY=value, one per line, no `export`, no shell expansion; quote values that
# contain spaces. A commented-out variable takes the default shown (empty: unset). Standard
# variable names are used where they exist; every other setting is INGESTD_<KEY>, and can also be
# set by its key name in the TOML file (INGESTD_CONFIG).
# Secrets set here are registered with the log and Sentry scrubbers at start-up, so they never
# appear in logs or error reports.
"""


def _fields() -> dict[str, FieldInfo]:
    fields = Settings.model_fields
    grouped = [key for group in GROUPS for key in group.keys]
    twice = sorted({key for key in grouped if grouped.count(key) > 1})
    missing = sorted(set(fields) - set(grouped))
    unknown = sorted(set(grouped) - set(fields))
    undescribed = sorted(key for key, f in fields.items() if not f.description)
    problems = [
        f"{what}: {', '.join(keys)}"
        for what, keys in (
            ("in no group of settings_docs.GROUPS", missing),
            ("in more than one group", twice),
            ("grouped but not a setting", unknown),
            ("without a description in shared/settings.py", undescribed),
        )
        if keys
    ]
    if problems:
        raise SettingsDocsError("settings cannot be documented: " + "; ".join(problems))
    return fields


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default(key: str, field: FieldInfo) -> str | None:
    """The default as text, None when the setting is unset by default."""
    if field.default_factory is not None:
        if key not in _COMPUTED_DEFAULTS:
            raise SettingsDocsError(f"{key}: computed default; describe it in _COMPUTED_DEFAULTS")
        return _COMPUTED_DEFAULTS[key]
    return None if field.default is None else _scalar(field.default)


def _allowed(field: FieldInfo) -> str:
    """What the field's type and constraints accept, when narrower than its type's name."""
    annotation = field.annotation
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(annotation))
    if bool in typing.get_args(annotation) or annotation is bool:
        return "true or false"
    # pydantic keeps ge=/gt=/le=/lt= as annotated_types objects, one bound each.
    bound = {
        op: getattr(m, attr)
        for m in field.metadata
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(m, attr, None) is not None
    }
    if ">=" in bound and "<=" in bound and len(bound) == 2:
        return f"{_scalar(bound['>='])}..{_scalar(bound['<='])}"
    parts = [f"{op} {_scalar(value)}" for op, value in bound.items()]
    return ", ".join(parts)


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=_WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _env_entry(key: str, field: FieldInfo) -> list[str]:
    name = env_name(key)
    assert field.description is not None  # checked by _fields
    text = field.description
    allowed = _allowed(field)
    if allowed:
        text += f" Allowed: {allowed}."
    if key in FILE_ONLY_KEYS:
        return _comment(f"{text} Set {key} in the TOML file; {name} in the environment is refused.")
    shown = _default(key, field)
    if key in SECRET_KEYS:
        shown = None  # a secret's line never carries a value, not even an example
    elif key in UNIT_VALUES:
        shown, note = UNIT_VALUES[key]
        text += f" Default: {_default(key, field)}. {note}"
    return [*_comment(text), f"#{name}={shown or ''}"]


def render_env() -> str:
    """The complete ``systemd/ingestd.env.example``."""
    fields = _fields()
    lines = [_ENV_HEADER.rstrip("\n")]
    for group in GROUPS:
        lines += ["", f"# --- {group.title} ".ljust(_WIDTH - 5, "-")]
        if group.env_intro:
            lines += [*_comment(group.env_intro), "#"]
        for key in group.keys:
            lines += _env_entry(key, fields[key])
            if key in _OTHER_VARIABLES:
                name, text = _OTHER_VARIABLES[key]
                lines += [*_comment(text), f"#{name}="]
    return "\n".join(lines) + "\n"


def _code_unless_computed(key: str, default: str) -> str:
    return default if key in _COMPUTED_DEFAULTS else f"`{default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_readme_table() -> str:
    """The README's configuration table, between its two marker comments."""
    fields = _fields()
    rows = [
        TABLE_START,
        f"<!-- generated from shared/settings.py by `{COMMAND}`; edit the descriptions there -->",
        "",
        "| key | environment | default | allowed | meaning |",
        "|---|---|---|---|---|",
    ]
    for group in GROUPS:
        for key in group.keys:
            field = fields[key]
            assert field.description is not None  # checked by _fields
            env = "TOML file only" if key in FILE_ONLY_KEYS else f"`{env_name(key)}`"
            default = _default(key, field)
            cells = (
                f"`{key}`",
                env,
                "unset" if default is None else _code_unless_computed(key, default),
                _allowed(field),
                field.description,
            )
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    rows.append(TABLE_END)
    return "\n".join(rows)


def splice_readme(readme: str, table: str) -> str:
    """``readme`` with the text between the table markers (inclusive) replaced by ``table``."""
    starts, ends = readme.count(TABLE_START), readme.count(TABLE_END)
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if starts != 1 or ends != 1 or end < start:
        raise SettingsDocsError(
            f"{README} needs exactly one {TABLE_START} followed by one {TABLE_END} "
            f"(found {starts} and {ends})"
        )
    return readme[:start] + table + readme[end + len(TABLE_END) :]


def rendered_files(root: Path) -> dict[Path, str]:
    """Each generated file under ``root`` with the text it should have."""
    readme = (root / README).read_text(encoding="utf-8")
    return {
        root / ENV_EXAMPLE: render_env(),
        root / README: splice_readme(readme, render_readme_table()),
    }


def stale_files(root: Path) -> list[Path]:
    return [
        path
        for path, text in rendered_files(root).items()
        if path.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingestd.shared.settings_docs", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=("env", "readme", "write", "check"))
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root (default: .)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "env":
            sys.stdout.write(render_env())
        elif args.command == "readme":
            sys.stdout.write(render_readme_table() + "\n")
        elif args.command == "write":
            for path, text in rendered_files(args.root).items():
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
        else:
            stale = stale_files(args.root)
            for path in stale:
                print(f"{path} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1 if stale else 0
    except (SettingsDocsError, OSError) as exc:
        print(f"settings_docs: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
