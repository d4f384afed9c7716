"""The parser: the local parsers import, or LlamaParse answers an authenticated request;
and, with LlamaParse, the webhook's address and signing secret."""

from __future__ import annotations

import importlib
import os
import pkgutil
import stat
from typing import Any
from urllib.parse import urlsplit

from ingestd.supervisor.doctor import http_probe
from ingestd.supervisor.doctor.findings import Result, fail, ok, skip, warn
from ingestd.supervisor.doctor.runner import Context

# Looked up, never created: an unknown id answers 404 to a caller whose key is accepted,
# and 401 to one whose key is not, without starting a job or spending credits.
PROBE_JOB = "00000000-0000-0000-0000-000000000000"
# Answers that prove the request passed authentication.
_AUTHENTICATED = frozenset({200, 400, 404, 422})


def check_parser(ctx: Context) -> Result:
    if ctx.settings.parser == "llamaparse":
        return _llamaparse(ctx)
    return _local()


def _local() -> Result:
    import ingestd.shared.parsers as parsers

    # Every module of the package, so a parser with a missing native library shows here
    # rather than on the first document of its type.
    for module in pkgutil.iter_modules(parsers.__path__, parsers.__name__ + "."):
        importlib.import_module(module.name)
    types = sorted(parsers.SUPPORTED_MIME_TYPES)
    return ok(f"local parsers import ({len(types)} document types)", parser="local", types=types)


def _llamaparse(ctx: Context) -> Result:
    settings = ctx.settings
    base = settings.llama_cloud_base_url.rstrip("/")
    facts: dict[str, Any] = {"parser": "llamaparse", "base_url": base}
    if settings.llama_cloud_api_key is None:
        return fail(
            "INGESTD_PARSER=llamaparse but LLAMA_CLOUD_API_KEY is not set",
            "set LLAMA_CLOUD_API_KEY, or INGESTD_PARSER=local",
            **facts,
            http_status=None,
        )
    key = settings.llama_cloud_api_key.get_secret_value()
    try:
        reply = http_probe.request(
            "GET", f"{base}/api/v2/parse/{PROBE_JOB}", token=key, timeout=ctx.options.timeout
        )
    except http_probe.Unreachable as exc:
        return fail(
            f"cannot reach {base}: {str(exc).replace(key, '***')}",
            "check LLAMA_CLOUD_BASE_URL and the network (proxy, firewall) to it",
            **facts,
            http_status=None,
        )
    facts.update(http_status=reply.status, latency_ms=round(reply.ms, 1))
    if reply.status in (401, 403):
        return fail(
            f"{base} refused the API key (HTTP {reply.status})",
            "set LLAMA_CLOUD_API_KEY to a valid LlamaCloud key",
            **facts,
        )
    if reply.status not in _AUTHENTICATED:
        said = http_probe.api_message(reply.body)
        return fail(
            f"{base} answered HTTP {reply.status}" + (f": {said}" if said else ""),
            "check LLAMA_CLOUD_BASE_URL (the API's base, e.g. https://api.cloud.llamaindex.ai)",
            **facts,
        )
    return ok(f"LlamaParse at {base}: key accepted, {reply.ms:.0f} ms", **facts)


def check_webhook(ctx: Context) -> Result:
    from ingestd.shared.llamaparse.setup import MIN_SECRET_CHARS, SECRET_FILE, webhook_url

    settings = ctx.settings
    if settings.parser != "llamaparse":
        return skip("the parser is local: no callbacks")
    url = webhook_url(settings)
    if url is None:
        return warn(
            "INGESTD_PUBLIC_URL is not set: no callbacks, every parse is polled",
            "set INGESTD_PUBLIC_URL to the https address LlamaParse can reach",
            webhook_url=None,
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return fail(
            f"INGESTD_PUBLIC_URL {settings.public_url!r} is not an http(s) URL",
            "set it like https://ingestd.example.com",
            webhook_url=url,
        )
    if settings.webhook_secret is not None:
        if len(settings.webhook_secret.get_secret_value().strip()) < MIN_SECRET_CHARS:
            return fail(
                f"INGESTD_WEBHOOK_SECRET is shorter than {MIN_SECRET_CHARS} characters",
                "set a longer one: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                webhook_url=url,
            )
        secret = "INGESTD_WEBHOOK_SECRET"
    else:
        path = settings.home / SECRET_FILE
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
            return fail(
                f"the webhook secret file {path} is readable by others",
                f"chmod 600 {path}",
                webhook_url=url,
            )
        secret = f"{path}" if mode is not None else f"{path} (generated on first run)"
    plain = " (plain http: use https outside a trusted network)" if parts.scheme == "http" else ""
    return ok(f"callbacks to {url}{plain}, signed with {secret}", webhook_url=url)
