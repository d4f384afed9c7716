"""statsd and Sentry: configured as their tools expect, and reachable."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from ingestd.supervisor.doctor.findings import Result, fail, ok, skip, warn
from ingestd.supervisor.doctor.runner import Context

# A counter of its own, so the datagram is visible in Graphite and harmless everywhere.
PROBE_METRIC = "doctor.probe"
# Long enough for an ICMP "port unreachable" from a local host to come back.
_ICMP_WAIT_S = 0.2


def check_statsd(ctx: Context) -> Result:
    settings = ctx.settings
    host, port = settings.statsd_host, settings.statsd_port
    if not host:
        return skip("STATSD_HOST is not set: metrics are off")
    facts: dict[str, Any] = {"host": host, "port": port, "address": None}
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return fail(
            f"STATSD_HOST {host!r} does not resolve: {exc.strerror}",
            "correct STATSD_HOST (a name this host resolves, or an address)",
            **facts,
        )
    family, kind, proto, _, address = infos[0]
    facts["address"] = str(address[0])
    line = f"{settings.statsd_prefix}.{PROBE_METRIC}:1|c".encode()
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(_ICMP_WAIT_S)
        try:
            # Connected, so that an ICMP "port unreachable" surfaces on the next call.
            sock.connect(address)
            sock.send(line)
            sock.recv(1)
        except ConnectionRefusedError:
            return warn(
                f"nothing listens on {host}:{port}/udp (the host refused the datagram)",
                "start the statsd server, or correct STATSD_HOST / STATSD_PORT",
                **facts,
            )
        except TimeoutError:
            pass  # the normal case: statsd never answers
        except OSError as exc:
            return fail(
                f"cannot send to {host}:{port}/udp: {exc.strerror or exc}",
                "check the route and firewall to the statsd host",
                **facts,
            )
    return ok(
        f"{host}:{port}/udp ({address[0]}): sent {settings.statsd_prefix}.{PROBE_METRIC}",
        **facts,
    )


def check_sentry(ctx: Context) -> Result:
    from sentry_sdk.utils import BadDsn, Dsn

    settings = ctx.settings
    if not settings.sentry_dsn:
        return skip("SENTRY_DSN is not set: error reporting is off")
    try:
        dsn = Dsn(settings.sentry_dsn)
    except BadDsn as exc:
        return fail(
            f"SENTRY_DSN does not parse: {exc}",
            "copy the DSN from the Sentry project's Client Keys page",
            project=None,
            host=None,
        )
    facts: dict[str, Any] = {"project": str(dsn.project_id), "host": dsn.host}
    where = f"project {dsn.project_id} at {dsn.host}"
    if not ctx.options.send_test_event:
        return ok(f"DSN parses: {where} (--send-test-event sends one)", **facts)
    event_id, status = _send_test_event(dsn, settings.sentry_environment, ctx.options.timeout)
    facts.update(event_id=event_id, http_status=status)
    if status is None or status >= 300:
        return fail(
            f"{where} did not accept the test event ("
            + (f"HTTP {status})" if status is not None else "unreachable)"),
            "check the DSN (a revoked key answers 401/403) and the network to Sentry",
            **facts,
        )
    return ok(f"{where} accepted test event {event_id}", **facts)


def _send_test_event(dsn: Any, environment: str, timeout: float) -> tuple[str, int | None]:
    """One event, posted as an envelope by hand so the answer's HTTP status is known
    (the SDK sends on a background thread and never says)."""
    from ingestd.shared.telemetry.sentry import installed_release

    release = installed_release()
    auth = dsn.to_auth(f"ingestd-doctor/{release or 'unknown'}")
    event_id = uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "timestamp": time.time(),
        "level": "info",
        "platform": "python",
        "logger": "ingestd.doctor",
        "environment": environment,
        "release": release,
        "message": {"formatted": "ingestd doctor test event"},
    }
    body = b"\n".join(
        [
            json.dumps({"event_id": event_id}).encode(),
            json.dumps({"type": "event"}).encode(),
            json.dumps(event).encode(),
        ]
    )
    req = urllib.request.Request(auth.get_api_url(), data=body, method="POST")
    req.add_header("X-Sentry-Auth", auth.to_header())
    req.add_header("Content-Type", "application/x-sentry-envelope")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return event_id, resp.status
    except urllib.error.HTTPError as exc:
        return event_id, exc.code
    except (urllib.error.URLError, OSError):
        return event_id, None
