"""One module per pipeline stage. Each exposes ``run(ctx) -> Status``: it does its
work for the run's documents (one, streamed; or small ones held together, see
workers/context.py), commits its results together with their status change through
``ctx.advance``, and returns the status it moved them to."""

from __future__ import annotations

from collections.abc import Callable

from ingestd.shared.states import Status
from ingestd.workers.context import StageContext
from ingestd.workers.stages import chunk, embed, finalize, parse

Stage = Callable[[StageContext], Status]

STAGES: dict[Status, Stage] = {
    Status.PARSING: parse.run,
    Status.CHUNKING: chunk.run,
    Status.EMBEDDING: embed.run,
    Status.FINALIZING: finalize.run,
}
