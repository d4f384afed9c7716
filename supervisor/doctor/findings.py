"""What a check finds, and how a check says it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but something deserves a look; does not fail the run
    FAIL = "fail"
    SKIP = "skip"  # not configured, or not applicable on this host


@dataclass(frozen=True)
class Result:
    """One check's verdict. ``details``: typed facts for ``--json`` (documented per check
    in the README); never a secret."""

    status: Status
    finding: str
    fix: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def ok(finding: str, **details: Any) -> Result:
    return Result(Status.OK, finding, None, details)


def warn(finding: str, fix: str, **details: Any) -> Result:
    return Result(Status.WARN, finding, fix, details)


def fail(finding: str, fix: str, **details: Any) -> Result:
    return Result(Status.FAIL, finding, fix, details)


def skip(finding: str, **details: Any) -> Result:
    return Result(Status.SKIP, finding, None, details)


@dataclass(frozen=True)
class Finding:
    """A named result as reported: the check's name and how long it took."""

    name: str
    result: Result
    seconds: float
    answered: bool = True  # False: the check overran its deadline and was left behind

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.result.status),
            "finding": self.result.finding,
            "fix": self.result.fix,
            "seconds": round(self.seconds, 3),
            "details": self.result.details,
        }
