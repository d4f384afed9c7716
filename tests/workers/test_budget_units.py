"""Time budgets (shared/budget.py) and how the supervisor reads and charges them."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestd.shared.budget import (
    KILL_SLACK_SECONDS,
    Blame,
    BudgetExceeded,
    Size,
    StageBudget,
    blame,
    seconds_for,
)
from ingestd.shared.errors import ErrorClass
from ingestd.shared.parsers.progress import Consumed
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.supervisor import watch
from ingestd.supervisor.children import Child, Death, Kind, Reason, StageLimit, classify

S = Settings(database_url="postgresql://unused")
STAGES = [Status.PARSING, Status.CHUNKING, Status.EMBEDDING]
sizes = st.builds(
    Size,
    bytes=st.integers(0, 1 << 40),
    chars=st.integers(0, 1 << 40),
    pages=st.integers(0, 10**6),
    tokens=st.integers(0, 10**10),
)


@given(st.sampled_from(STAGES), sizes, sizes)
def test_budget_grows_with_size_within_floor_and_ceiling(
    stage: Status, a: Size, extra: Size
) -> None:
    small, big = seconds_for(stage, a, S), seconds_for(stage, a + extra, S)
    assert small <= big
    for budget in (small, big):
        assert min(S.budget_floor_seconds, S.budget_ceiling_seconds) <= budget
        assert budget <= min(S.budget_ceiling_seconds, S.stage_deadline_seconds)


def test_budget_rates_count_the_units_of_each_stage() -> None:
    mib = 1024 * 1024
    assert seconds_for(Status.PARSING, Size(bytes=2 * mib, pages=100), S) == 60 + 2 * 30 + 5
    assert seconds_for(Status.CHUNKING, Size(chars=mib), S) == 60 + 30
    assert seconds_for(Status.EMBEDDING, Size(tokens=10_000), S) == 60 + 20
    # Never above the stage deadline, even with a higher ceiling.
    low = Settings(database_url="postgresql://unused", stage_deadline_seconds=100)
    assert seconds_for(Status.PARSING, Size(bytes=100 * mib), low) == 100


def test_blame_is_the_input_only_for_one_document_parsed_locally_or_chunked() -> None:
    assert blame(Status.PARSING, alone=True, local_parser=True) is Blame.INPUT
    assert blame(Status.CHUNKING, alone=True, local_parser=False) is Blame.INPUT
    assert blame(Status.PARSING, alone=True, local_parser=False) is Blame.SERVICE
    assert blame(Status.PARSING, alone=False, local_parser=True) is Blame.SERVICE
    assert blame(Status.EMBEDDING, alone=True, local_parser=True) is Blame.SERVICE
    assert Blame.INPUT.error_class is ErrorClass.INVALID_INPUT
    assert Blame.SERVICE.error_class is ErrorClass.DEADLINE
    assert ErrorClass.DEADLINE.retryable and not ErrorClass.INVALID_INPUT.retryable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_overrun_names_budget_size_and_how_far_it_got() -> None:
    clock = FakeClock()
    size = Size(bytes=12 * 1024 * 1024)
    budget = StageBudget(Status.PARSING, size, S, Blame.INPUT, clock=clock)
    assert budget.seconds == 60 + 12 * 30
    budget.consumed(Consumed("page", 2140, 3000))  # the page count joins the size
    assert budget.seconds == 60 + 12 * 30 + 3000 * 0.05
    clock.now += budget.seconds  # exactly at the budget: still within it
    budget.check()
    clock.now += 0.5
    with pytest.raises(BudgetExceeded) as raised:
        budget.check()
    assert raised.value.error_class is ErrorClass.INVALID_INPUT
    assert raised.value.message == (
        "parsing took longer than its 570 s budget for 12 MiB / 3,000 pages; "
        "stopped after page 2,140"
    )


def test_embed_overrun_is_a_retried_deadline() -> None:
    clock = FakeClock()
    budget = StageBudget(Status.EMBEDDING, Size(tokens=500), S, Blame.SERVICE, clock=clock)
    clock.now += 61.5
    with pytest.raises(BudgetExceeded) as raised:
        budget.check()
    assert raised.value.error_class is ErrorClass.DEADLINE
    assert raised.value.message == "embedding took longer than its 61 s budget for 500 tokens"


def child(now: float = 100.0) -> Child:
    r, w = os.pipe()
    os.close(w)
    c = Child.forked(Kind.WORKER, 0, 2**22 + 1, "h:1:0:0", 0, r, now, 0)
    return c


def beat(c: Child, now: float, budget: object, doc: str = "d1", stage: str = "parsing") -> None:
    c.on_message({"hb": now, "doc": doc, "stage": stage, "docs": 0, "budget": budget}, now)


def test_supervisor_kills_past_the_stated_budget_plus_slack() -> None:
    c = child()
    wire = {"seconds": 5.0, "blame": "input", "basis": "1 KiB", "done": "page 3"}
    beat(c, 100.0, wire)
    assert c.budget == StageLimit(5.0, Blame.INPUT, "1 KiB", "page 3")
    assert watch.past_budget(c, 100.0 + 5 + KILL_SLACK_SECONDS, S) is None
    detail = watch.past_budget(c, 100.0 + 5 + KILL_SLACK_SECONDS + 0.1, S)
    assert detail == "parsing took longer than its 5 s budget for 1 KiB; stopped after page 3"
    # A new stage (or document) starts a new clock, and a message without a budget has none.
    beat(c, 200.0, None, stage="chunking")
    assert c.budget is None and watch.past_budget(c, 10_000.0, S) is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "5",
        {"seconds": True, "blame": "input", "basis": ""},
        {"seconds": -1, "blame": "input", "basis": ""},
        {"seconds": 5, "blame": "nobody", "basis": ""},
        {"seconds": 5, "blame": "input", "basis": 3},
    ],
)
def test_malformed_budgets_are_ignored(raw: object) -> None:
    assert StageLimit.read(raw) is None


def test_a_budget_at_the_stage_deadline_is_left_to_the_deadline() -> None:
    c = child()
    beat(c, 100.0, {"seconds": S.stage_deadline_seconds, "blame": "input", "basis": "x"})
    assert watch.past_budget(c, 100.0 + S.stage_deadline_seconds + 60, S) is None
    assert watch.past_stage_deadline(c, 100.0 + S.stage_deadline_seconds + 60, S) is not None


@pytest.mark.parametrize(
    ("who", "cls"), [(Blame.INPUT, ErrorClass.INVALID_INPUT), (Blame.SERVICE, ErrorClass.DEADLINE)]
)
def test_a_budget_death_is_charged_to_its_document_by_blame(who: Blame, cls: ErrorClass) -> None:
    c = child()
    beat(c, 100.0, {"seconds": 1.0, "blame": str(who), "basis": "x"})
    c.kill_reason, c.kill_detail, c.kill_blame = Reason.BUDGET, "over", who
    death = classify(c, 9)  # killed by SIGKILL
    assert isinstance(death, Death)
    assert death.reason is Reason.BUDGET and death.release_class is cls
    assert death.charged_to_document  # not a crash loop of the daemon
