"""LlamaParse (LlamaCloud) client and webhook signatures."""

from ingestd.shared.llamaparse.client import (
    DEFAULT_BASE_URL,
    WEBHOOK_EVENTS,
    JobState,
    JobStatus,
    LlamaParseClient,
    Page,
)
from ingestd.shared.llamaparse.signing import SIGNATURE_HEADER, is_fresh, sign, verify

__all__ = [
    "DEFAULT_BASE_URL",
    "SIGNATURE_HEADER",
    "WEBHOOK_EVENTS",
    "JobState",
    "JobStatus",
    "LlamaParseClient",
    "Page",
    "is_fresh",
    "sign",
    "verify",
]
