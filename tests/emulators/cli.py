"""``emulator openai|llamaparse ...``: run an emulator in the foreground until SIGINT/SIGTERM.

The base URL is printed alone on the first line of stdout once the server listens, so a
script can read it (``--port 0``, the default, picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from enum import StrEnum

from ingestd.shared.malloc import tune_malloc
from tests.emulators.llamaparse_api import (
    LlamaParseEmulator,
    LlamaParseEmulatorConfig,
    LlamaParseFault,
)
from tests.emulators.openai_api import OpenAIEmulator, OpenAIEmulatorConfig, OpenAIFault


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _add_common(p: argparse.ArgumentParser, default_key: str) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--api-key", default=default_key, help=f"expected bearer key ({default_key})")
    p.add_argument("--any-key", action="store_true", help="accept any non-empty bearer key")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")


def _add_fault_rates(p: argparse.ArgumentParser, kinds: type[StrEnum]) -> None:
    for kind in kinds:
        p.add_argument(
            f"--fault-rate-{kind.value.replace('_', '-')}",
            dest=f"rate_{kind.name}",
            type=_probability,
            default=0.0,
            metavar="P",
            help=f"probability that a request gets the {kind.value} fault",
        )


def _fault_rates(args: argparse.Namespace, kinds: type[StrEnum]) -> dict[StrEnum, float]:
    return {k: getattr(args, f"rate_{k.name}") for k in kinds if getattr(args, f"rate_{k.name}")}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emulator", description=__doc__)
    sub = parser.add_subparsers(dest="service", required=True)

    oa = sub.add_parser("openai", help="the OpenAI embeddings API")
    _add_common(oa, OpenAIEmulatorConfig.api_key or "")
    oa.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute")
    oa.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute")
    oa.add_argument("--latency", type=_non_negative, default=0.0, help="seconds per reply")
    oa.add_argument("--slow-seconds", type=_non_negative, default=30.0)
    oa.add_argument(
        "--estimate-usage",
        action="store_true",
        help="report usage by the byte estimate instead of counting tokens (faster)",
    )
    _add_fault_rates(oa, OpenAIFault)

    lp = sub.add_parser("llamaparse", help="the LlamaParse (LlamaCloud) parsing API")
    _add_common(lp, LlamaParseEmulatorConfig.api_key or "")
    lp.add_argument("--delay", type=_non_negative, default=0.0, help="processing seconds per job")
    lp.add_argument("--upload-limit", type=int, default=50, help="uploads per window (0: no limit)")
    lp.add_argument("--upload-window", type=_non_negative, default=10.0)
    lp.add_argument("--credits", type=int, default=None, help="credits left (default: unlimited)")
    lp.add_argument("--webhook-max-attempts", type=_positive_int, default=5)
    lp.add_argument("--webhook-backoff", type=_non_negative, default=0.5)
    lp.add_argument("--webhook-delay", type=_non_negative, default=5.0)
    lp.add_argument("--webhook-include-markdown", action="store_true")
    _add_fault_rates(lp, LlamaParseFault)
    return parser


def _check_rates(parser: argparse.ArgumentParser, rates: dict[StrEnum, float]) -> None:
    if sum(rates.values()) > 1.0:
        parser.error("the fault rates add up to more than 1")


def build(argv: Sequence[str]) -> OpenAIEmulator | LlamaParseEmulator:
    """The emulator the arguments describe (not started). Exits on bad arguments."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.service == "openai":
        rates = _fault_rates(args, OpenAIFault)
        _check_rates(parser, rates)
        oa_config = OpenAIEmulatorConfig(
            api_key=None if args.any_key else args.api_key,
            rpm=args.rpm,
            tpm=args.tpm,
            latency=args.latency,
            slow_seconds=args.slow_seconds,
            fault_rates={OpenAIFault(k): v for k, v in rates.items()},
            seed=args.seed,
            exact_usage=not args.estimate_usage,
        )
        return OpenAIEmulator(oa_config, host=args.host, port=args.port)
    rates = _fault_rates(args, LlamaParseFault)
    _check_rates(parser, rates)
    lp_config = LlamaParseEmulatorConfig(
        api_key=None if args.any_key else args.api_key,
        processing_delay=args.delay,
        upload_limit=args.upload_limit or None,
        upload_window=args.upload_window,
        credits=args.credits,
        fault_rates={LlamaParseFault(k): v for k, v in rates.items()},
        seed=args.seed,
        webhook_max_attempts=args.webhook_max_attempts,
        webhook_backoff=args.webhook_backoff,
        webhook_delay=args.webhook_delay,
        webhook_include_markdown=args.webhook_include_markdown,
    )
    return LlamaParseEmulator(lp_config, host=args.host, port=args.port)


async def _serve(emulator: OpenAIEmulator | LlamaParseEmulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await emulator.start()
        try:
            print(emulator.url, flush=True)
            print(f"{type(emulator).__name__} listening on {emulator.url}", file=sys.stderr)
            await stop.wait()
        finally:
            await emulator.stop()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    try:
        emulator = build(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse's own exit (usage error or --help)
        return exc.code if isinstance(exc.code, int) else 2
    tune_malloc()  # it renders ~10 MB responses back to back, as a worker reads them
    try:
        asyncio.run(_serve(emulator))
    except OSError as exc:
        print(f"emulator: cannot serve on {emulator.host}:{emulator.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
