"""The database contract lives in ``shared/db/``: no other module holds a SQL statement.

A scan of every string constant (docstrings aside) in the installed package for text
that starts like a statement. Session statements (SET, LISTEN) count too.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

_STATEMENT = re.compile(
    r"^\s*(?:(?:SELECT|LISTEN|NOTIFY|CREATE|DROP|ALTER|TRUNCATE)\b|INSERT\s+INTO\b"
    r"|UPDATE\s+\w+(?:\s+\w+)?\s+SET\b|DELETE\s+FROM\b|WITH\s+\w+\s+AS\b|LOCK\s+TABLE\b"
    r"|SET\s+(?:LOCAL\s+|SESSION\s+)?\w+\s*(?:=|TO\b))"
)


def _modules() -> dict[str, Path]:
    """Every module of the package by its path in the source tree (``shared/...``)."""
    found = {}
    for part in ("shared", "workers", "supervisor"):
        init = importlib.import_module(f"ingestd.{part}").__file__
        assert init is not None
        package = Path(init).resolve().parent
        for path in package.rglob("*.py"):
            found[f"{part}/{path.relative_to(package).as_posix()}"] = path
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def sql_in(source: str) -> list[str]:
    """The string constants in ``source`` that read as SQL statements."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skip
        and _STATEMENT.match(node.value)
    ]


def test_the_scan_finds_sql_and_ignores_prose() -> None:
    source = '''
"""SELECT in a docstring is prose."""
Q = "SELECT id FROM documents"
conn.execute(f"UPDATE documents SET status = {x}")
conn.execute("LISTEN ingestd_work")
conn.execute("SET LOCAL synchronous_commit = on")
conn.execute("UPDATE documents d SET x = 1")
msg = "select a model with --embedder"
msg = "SELECTED documents: 3"
'''
    assert len(sql_in(source)) == 5


def test_no_module_outside_shared_db_holds_sql() -> None:
    modules = _modules()
    assert "shared/db/jobs.py" in modules, "the scan must see the source tree"
    offenders = {
        name: found[0][:60]
        for name, path in sorted(modules.items())
        if not name.startswith("shared/db/") and (found := sql_in(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


# A statement that sets a document's status or writes its history.
_STATUS_WRITE = re.compile(
    r"INSERT\s+INTO\s+(?:documents|document_events)\b|UPDATE\s+documents\b.*?\bSET\b.*?\bstatus\s*=",
    re.DOTALL,
)


def test_only_the_jobs_module_changes_a_status_or_writes_history() -> None:
    assert _STATUS_WRITE.search("UPDATE documents d SET attempts = 1, status = 'x'")
    assert not _STATUS_WRITE.search("UPDATE documents SET parse_job_id = NULL")
    writers = {
        name
        for name, path in _modules().items()
        if any(_STATUS_WRITE.search(text) for text in _strings(path.read_text(encoding="utf-8")))
    }
    assert writers == {"shared/db/jobs.py"}


def _strings(source: str) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
