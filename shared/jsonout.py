"""JSON as ingestd prints and serves it: the CLI's ``--json`` and the HTTP API share it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        # A money or count column from PostgreSQL: a number in JSON, as everywhere else.
        return float(value)
    return str(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=False)
