"""The malloc settings for buffer-churning processes really change where big blocks go."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ingestd.shared.malloc import tune_malloc

# Run in a child: a fresh allocator, and this test process keeps its own settings.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from ingestd.shared.malloc import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    def mmapped_growth(size):
        before = libc.mallinfo2().hblkhd
        block = bytearray(size)
        return libc.mallinfo2().hblkhd - before

    tuned = sys.argv[1] == "tuned" and tune_malloc()
    print(tuned, mmapped_growth(8 * 2**20))
    """
)


def _probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_big_blocks_come_from_the_heap_once_tuned() -> None:
    tuned, growth = _probe("default")
    assert not tuned and growth >= 8 * 2**20  # glibc's default: a mapping of its own
    assert _probe("tuned") == (True, 0)


def test_the_operators_own_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert tune_malloc() is False
