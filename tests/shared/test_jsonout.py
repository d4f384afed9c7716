"""JSON as the CLI prints it and the API serves it: one type per field, whichever path."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ingestd.shared.jsonout import dumps


def test_numbers_stay_numbers_and_the_rest_reads_back() -> None:
    doc_id = uuid.uuid4()
    at = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    out = json.loads(dumps({"cost_usd": Decimal("0.000123"), "id": doc_id, "at": at}))
    assert out == {"cost_usd": 0.000123, "id": str(doc_id), "at": "2026-12-02T08:00:00+00:00"}
