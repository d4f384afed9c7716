"""The supervisor's pure parts: backoff maths, memory hysteresis, death classification,
the signal queue, titles, pid file — in microseconds, no child processes."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestd.shared.channel import ChannelReader
from ingestd.shared.errors import ErrorClass
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_OK
from ingestd.supervisor import control
from ingestd.supervisor.children import Child, Kind, Reason, classify
from ingestd.supervisor.memory import MB, MemoryLimits, MemoryWatch, Verdict
from ingestd.supervisor.proctitle import is_supervisor_title, supervisor_title, worker_title
from ingestd.supervisor.restarts import RestartPolicy, backoff_delay
from ingestd.supervisor.signals import SignalQueue


def exited(code: int) -> int:
    return code << 8  # a wait status as waitpid returns it


def killed(sig: int) -> int:
    return int(sig)


@pytest.fixture
def child() -> Iterator[Child]:
    r, w = os.pipe()
    os.close(w)
    c = Child(
        kind=Kind.WORKER,
        slot=1,
        pid=4242,
        owner="h:1:1:7",
        generation=7,
        reader=ChannelReader(r),
        started=100.0,
        started_at=datetime.now(UTC),
        settings_version=0,
    )
    yield c
    os.close(r)


# -- restarts ----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, base=0.5, cap=30) for n in range(9)] == [
        0.0,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    assert backoff_delay(10_000, base=0.5, cap=30) == 30.0  # no overflow


def test_rapid_failures_back_off_and_a_loop_gives_up() -> None:
    policy = RestartPolicy(base=1.0, cap=4.0, limit=4, window=60.0)
    decisions = [policy.record(0, now=t, lifetime=1.0, failure=True) for t in (0, 1, 2, 3)]
    assert [d.delay for d in decisions] == [1.0, 2.0, 4.0, 4.0]
    assert [d.give_up for d in decisions] == [False, False, False, True]


def test_failures_of_all_slots_count_towards_the_loop() -> None:
    policy = RestartPolicy(base=1.0, cap=4.0, limit=3, window=60.0)
    assert policy.record(0, now=0, lifetime=1, failure=True).streak == 1
    assert policy.record(1, now=1, lifetime=1, failure=True).streak == 1  # per-slot streak
    assert policy.record(2, now=2, lifetime=1, failure=True).give_up


def test_old_failures_leave_the_window() -> None:
    policy = RestartPolicy(base=1.0, cap=4.0, limit=3, window=10.0)
    policy.record(0, now=0, lifetime=1, failure=True)
    policy.record(0, now=1, lifetime=1, failure=True)
    decision = policy.record(0, now=20, lifetime=1, failure=True)
    assert not decision.give_up and decision.rapid_failures == 1
    assert decision.streak == 3  # still no healthy life in between: keep backing off


def test_a_long_life_or_a_planned_exit_resets_the_streak() -> None:
    policy = RestartPolicy(base=1.0, cap=60.0, limit=100, window=10.0)
    policy.record(0, now=0, lifetime=1, failure=True)
    policy.record(0, now=1, lifetime=1, failure=True)
    after_long_life = policy.record(0, now=100, lifetime=50, failure=True)
    assert (after_long_life.delay, after_long_life.streak) == (0.0, 0)
    policy.record(0, now=101, lifetime=1, failure=True)
    assert policy.record(0, now=102, lifetime=1, failure=False).delay == 0.0
    assert policy.record(0, now=103, lifetime=1, failure=True).delay == 1.0


def test_failures_charged_to_a_document_back_off_but_never_give_up() -> None:
    policy = RestartPolicy(base=1.0, cap=4.0, limit=2, window=60.0)
    decisions = [
        policy.record(0, now=t, lifetime=1, failure=True, charged_to_document=True)
        for t in range(10)
    ]
    assert [d.delay for d in decisions[:4]] == [1.0, 2.0, 4.0, 4.0]
    assert not any(d.give_up for d in decisions)
    assert decisions[-1].rapid_failures == 0
    # Failures with nothing in hand still count, on top of those.
    assert not policy.record(1, now=11, lifetime=1, failure=True).give_up
    assert policy.record(1, now=12, lifetime=1, failure=True).give_up


# -- memory --------------------------------------------------------------------------


def test_soft_ceiling_needs_consecutive_strikes() -> None:
    limits = MemoryLimits(soft_bytes=100 * MB, hard_bytes=200 * MB, strikes=3)
    watch = MemoryWatch()
    readings = [150, 150, 90, 150, 150, 150]
    verdicts = [watch.observe(r * MB, limits) for r in readings]
    assert verdicts == [Verdict.OK, Verdict.OK, Verdict.OK, Verdict.OK, Verdict.OK, Verdict.SOFT]
    assert watch.peak_uss == 150 * MB


def test_hard_ceiling_acts_on_one_reading() -> None:
    limits = MemoryLimits(soft_bytes=100 * MB, hard_bytes=200 * MB, strikes=3)
    assert MemoryWatch().observe(201 * MB, limits) is Verdict.HARD
    assert MemoryWatch().observe(200 * MB, limits) is not Verdict.HARD


# -- classifying deaths ----------------------------------------------------------------


def test_a_signal_we_did_not_send_is_a_crash_reported_to_sentry(child: Child) -> None:
    death = classify(child, killed(signal.SIGKILL))
    assert death.reason is Reason.CRASH and death.failure and death.report
    assert death.release_class is ErrorClass.CRASH
    assert "OOM" in death.detail


def test_exit_70_is_a_crash_the_worker_reported_itself(child: Child) -> None:
    death = classify(child, exited(EXIT_CRASH))
    assert death.reason is Reason.CRASH and death.failure and not death.report


def test_exit_78_is_a_configuration_error(child: Child) -> None:
    death = classify(child, exited(EXIT_CONFIG))
    assert death.reason is Reason.CONFIG and death.release_class is None
    assert not death.reason.replaced


def test_our_kill_reason_wins_over_the_exit_status(child: Child) -> None:
    child.kill_reason, child.kill_detail = Reason.MEMORY, "USS 2000 MB over 1536 MB"
    death = classify(child, killed(signal.SIGKILL))
    assert death.reason is Reason.MEMORY and death.release_class is ErrorClass.MEMORY
    assert death.detail.startswith("USS 2000 MB") and death.report


def test_planned_stops_are_not_failures(child: Child) -> None:
    child.stop_reason, child.stop_signal = Reason.RECYCLE, signal.SIGUSR2
    death = classify(child, exited(EXIT_OK))
    assert death.reason is Reason.RECYCLE and not death.failure and not death.report
    assert death.release_class is None and death.reason.replaced
    # Killed at the end of its grace: still our stop.
    child.stop_reason, child.escalated = Reason.SHUTDOWN, True
    assert classify(child, killed(signal.SIGKILL)).reason is Reason.SHUTDOWN


def test_a_crash_during_a_planned_stop_is_still_a_crash(child: Child) -> None:
    child.stop_reason, child.stop_signal = Reason.SHUTDOWN, signal.SIGTERM
    assert classify(child, exited(EXIT_CRASH)).reason is Reason.CRASH
    assert classify(child, killed(signal.SIGTERM)).reason is Reason.SHUTDOWN


def test_an_unrequested_clean_exit_is_a_failure(child: Child) -> None:
    death = classify(child, exited(EXIT_OK))
    assert death.reason is Reason.EXITED and death.failure


def test_a_failure_holding_a_document_is_charged_to_it(child: Child) -> None:
    child.on_message({"hb": 1.0, "doc": "d-1", "stage": "parsing", "docs": 0}, now=101.0)
    for status in (killed(signal.SIGKILL), exited(EXIT_CRASH), exited(EXIT_OK)):
        death = classify(child, status)
        assert death.document_id == "d-1" and death.charged_to_document
    child.kill_reason, child.kill_detail = Reason.MEMORY, "USS over the hard ceiling"
    assert classify(child, killed(signal.SIGKILL)).charged_to_document


def test_idle_failures_and_stops_are_not_charged_to_a_document(child: Child) -> None:
    child.on_message({"hb": 1.0, "doc": None, "stage": None, "docs": 3}, now=101.0)
    assert not classify(child, exited(EXIT_CRASH)).charged_to_document
    child.on_message({"hb": 2.0, "doc": "d-1", "stage": "parsing", "docs": 3}, now=102.0)
    assert not classify(child, exited(EXIT_CONFIG)).charged_to_document  # not its fault
    child.stop_reason, child.stop_signal = Reason.RECYCLE, signal.SIGUSR2
    assert not classify(child, exited(EXIT_OK)).charged_to_document  # not a failure


def test_heartbeats_track_document_stage_and_progress(child: Child) -> None:
    child.on_message({"hb": 1.0, "doc": "d1", "stage": "parsing", "docs": 0}, now=101.0)
    child.on_message({"hb": 2.0, "doc": "d1", "stage": "parsing", "docs": 0}, now=105.0)
    assert child.stage_age(106.0) == 5.0  # same doc and stage since 101
    child.on_message({"hb": 3.0, "doc": "d1", "stage": "chunking", "docs": 0}, now=107.0)
    assert child.stage_age(108.0) == 1.0
    child.on_message(
        {"hb": 4.0, "doc": None, "stage": None, "docs": 3, "event": "stopping"}, now=109.0
    )
    assert child.stage_age(110.0) is None and child.documents_done == 3
    assert child.stopping_reported and child.heartbeats == 4
    assert child.heartbeat_age(110.0) == 1.0


# -- signals ---------------------------------------------------------------------------


def test_handlers_only_enqueue_and_ring_the_doorbell() -> None:
    queue = SignalQueue()
    queue.install()
    try:
        os.kill(os.getpid(), signal.SIGTTIN)
        os.kill(os.getpid(), signal.SIGUSR1)
        readable, _, _ = select.select([queue.wakeup_fd], [], [], 5.0)
        assert readable == [queue.wakeup_fd]
        assert list(queue) == [signal.SIGTTIN, signal.SIGUSR1]
        queue.clear()
        assert select.select([queue.wakeup_fd], [], [], 0)[0] == []
    finally:
        queue.uninstall()
    assert signal.getsignal(signal.SIGTTIN) is signal.SIG_DFL


# -- titles, pid file ------------------------------------------------------------------


def test_titles() -> None:
    assert supervisor_title(4) == "ingestd: supervisor [4 workers]"
    assert supervisor_title(1, "draining") == "ingestd: supervisor [1 worker] draining"
    assert worker_title(2, "abc12345-6789", "embedding") == (
        "ingestd: worker 2 doc=abc12345 stage=embedding"
    )
    assert worker_title(0) == "ingestd: worker 0 idle"
    assert is_supervisor_title(["ingestd: supervisor [4 workers]"])
    assert not is_supervisor_title(["python", "-m", "pytest"])


def test_pid_file_is_removed_only_by_its_owner(make_settings: object, tmp_path: Path) -> None:
    settings = make_settings()  # type: ignore[operator]
    path = control.write_pid_file(settings, 1234)
    assert control.read_pid_file(path) == 1234
    control.remove_pid_file(settings, 999)  # another supervisor replaced it meanwhile
    assert path.exists()
    control.remove_pid_file(settings, 1234)
    assert not path.exists()
