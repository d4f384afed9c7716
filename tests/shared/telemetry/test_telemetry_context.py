"""Process and task context."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ingestd.shared.states import ACTIVE
from ingestd.shared.telemetry import context


@pytest.fixture(autouse=True)
def _reset_process() -> Iterator[None]:
    yield
    context._role = context._slot = None


def test_stages_are_the_active_statuses() -> None:
    assert context.STAGES == ("parsing", "chunking", "embedding", "finalizing")
    assert tuple(str(s) for s in ACTIVE) == context.STAGES


def test_current_reflects_bindings_and_restores_them() -> None:
    context.set_process("worker", 7)
    doc = uuid.uuid4()
    assert context.current() == {
        "role": "worker",
        "slot": 7,
        "correlation_id": None,
        "document_id": None,
        "stage": None,
        "document_ids": None,
        "correlation_ids": None,
    }
    with context.bind_document(doc, "c-1"):
        with context.bind_stage("finalizing"):
            assert context.current()["document_id"] == str(doc)  # UUIDs become strings
            assert context.current()["stage"] == "finalizing"
            with context.bind_document("other", None):
                assert context.current()["correlation_id"] is None
            assert context.current()["correlation_id"] == "c-1"
        assert context.current()["stage"] is None
    assert context.current()["document_id"] is None


def test_a_group_names_every_member_until_one_document_is_bound() -> None:
    members = [(uuid.uuid4(), "c-a"), (uuid.uuid4(), "c-b")]
    with context.bind_group("g-1", members):
        ctx = context.current()
        assert ctx["correlation_id"] == "g-1"
        assert ctx["document_id"] is None
        assert ctx["document_ids"] == [str(d) for d, _ in members]
        assert ctx["correlation_ids"] == ["c-a", "c-b"]
        with context.bind_document(members[1][0], "c-b"):
            ctx = context.current()
            # A line about one member is that member's alone.
            assert (ctx["document_id"], ctx["correlation_id"]) == (str(members[1][0]), "c-b")
            assert ctx["document_ids"] is None and ctx["correlation_ids"] is None
        assert context.current()["correlation_ids"] == ["c-a", "c-b"]
    assert context.current()["correlation_ids"] is None
    assert context.current()["correlation_id"] is None


def test_binding_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), context.bind_document("d", "c"):
        raise RuntimeError
    assert context.current()["document_id"] is None


def test_http_requests_bind_a_correlation_id_alone() -> None:
    corr = context.new_correlation_id()
    uuid.UUID(corr)
    with context.bind_correlation(corr):
        assert context.current()["correlation_id"] == corr
        assert context.current()["document_id"] is None


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        context.set_process("janitor")
    with pytest.raises(ValueError, match="slot"):
        context.set_process("worker")
    with pytest.raises(ValueError, match="slot"):
        context.set_process("worker", -1)
    with pytest.raises(ValueError, match="document_id"), context.bind_document("", None):
        pass
    with pytest.raises(ValueError, match="stage"), context.bind_stage("parse"):
        pass
    context.set_process("http")
    assert (context.role(), context.slot()) == ("http", None)
