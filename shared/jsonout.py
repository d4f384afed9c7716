"""JSON as ingestd prints and serves it: the CLI's ``--json`` and the HTTP API share it."""

from __future__ import annotations

import json
from typing import Any


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=False)
