"""Local HTTP emulators of the outside services ingestd talks to, for tests and load runs.

- ``OpenAIEmulator``: the OpenAI embeddings API (``tests.emulators.openai_api``).
- ``LlamaParseEmulator``: the LlamaParse / LlamaCloud parsing API, v2 and v1, with signed
  webhooks (``tests.emulators.llamaparse_api``).
- ``running(emulator)``: run one on its own loop in a background thread (``.runner``).
- ``main(argv)``: the ``emulator openai|llamaparse`` command line (``.cli``).

An emulator is never a stand-in for the real service outside tests and local load runs.
"""

from tests.emulators.llamaparse_api import (
    DeliveryRecord,
    LlamaParseEmulator,
    LlamaParseEmulatorConfig,
    LlamaParseFault,
    LlamaParseStats,
)
from tests.emulators.openai_api import (
    OpenAIEmulator,
    OpenAIEmulatorConfig,
    OpenAIFault,
    OpenAIStats,
    embedding_for,
)
from tests.emulators.runner import call, running

__all__ = [
    "DeliveryRecord",
    "LlamaParseEmulator",
    "LlamaParseEmulatorConfig",
    "LlamaParseFault",
    "LlamaParseStats",
    "OpenAIEmulator",
    "OpenAIEmulatorConfig",
    "OpenAIFault",
    "OpenAIStats",
    "call",
    "embedding_for",
    "running",
]
