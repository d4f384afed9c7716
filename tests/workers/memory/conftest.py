"""Memory regression tests run in the normal suite, with or without ``--memray``.

pytest-memray tracks every test that carries a ``limit_memory`` marker (its
``pytest_pyfunc_call`` hook starts a Tracker for marked tests even when
``--memray`` is not given), so the limits hold in a plain ``pytest -n 2`` run.
``--memray`` is deliberately not forced on: it would track every test of the
suite. The fixture below makes that guarantee explicit: a marked test that was
not measured (the plugin disabled with ``-p no:memray``, or a plugin version that
stops tracking without ``--memray``) fails instead of passing unchecked.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

_CALL_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED] = report.passed
    return report


@pytest.fixture(autouse=True)
def _memory_limit_enforced(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("limit_memory") is None:
        yield
        return
    manager = request.config.pluginmanager.get_plugin("memray_manager")
    if manager is None:
        pytest.fail("pytest-memray is not active: the limit_memory marker would not be checked")
    yield
    # A test that failed on its own has no measurement to check; one that passed must.
    if request.node.stash.get(_CALL_PASSED, False) and request.node.nodeid not in manager.results:
        pytest.fail("pytest-memray did not measure this test: its memory limit was not checked")
