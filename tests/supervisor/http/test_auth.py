"""API tokens over a real socket: 401 / 403, the route table, what each scope sees, the
webhook-only listener, and the refusal to start exposed without a token."""

from __future__ import annotations

import asyncio
import io
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from ingestd.shared.errors import ConfigError
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH
from ingestd.shared.ingest import ingest_stream
from ingestd.supervisor.http.app import build_app, serve
from ingestd.supervisor.http.auth import ACCESS, Access, is_loopback
from ingestd.supervisor.tokens import Scope, issue
from tests.emulators import running
from tests.supervisor.http.http_harness import (
    JOB_PARKED_BY,
    AppServer,
    event_body,
    multipart,
    park,
    request,
    signed_headers,
    snapshot,
)

REALM = 'Bearer realm="ingestd"'


def _token(db, scope: str, **kwargs) -> str:
    return issue(db, f"t-{scope}-{os.urandom(3).hex()}", Scope.parse(scope), **kwargs).token


def _upload(url: str, token: str | None, data: bytes = b"some text to upload"):
    body, headers = multipart(data, "a.txt")
    return request("POST", url + "/v1/documents", data=body, headers=headers, token=token)


def test_no_wrong_revoked_or_expired_token_is_a_401_with_a_challenge(server, db) -> None:
    status = server.url + "/v1/status"
    missing = request("GET", status, token=None)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == REALM  # nothing given: no error code
    assert "Bearer" in missing.json()["detail"]

    good = _token(db, "read")
    assert request("GET", status, token=good).status == 200
    token_id, secret = good.split("_", 2)[1:]
    wrong_secret = f"ingestd_{token_id}_{secret[::-1]}"
    unknown = f"ingestd_{'f' * 12}_{secret}"
    revoked = _token(db, "admin")
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (revoked.split("_")[1],))
    expired = _token(db, "admin", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    for given in (wrong_secret, unknown, revoked, expired, "not-a-token", good + "x"):
        reply = request("GET", status, token=given)
        assert reply.status == 401, given
        assert reply.headers["WWW-Authenticate"] == REALM + ', error="invalid_token"'
        assert given not in reply.body.decode()  # the token is not echoed
    basic = request("GET", status, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401 and 'error="invalid_token"' in basic.headers["WWW-Authenticate"]


def test_a_revoked_token_is_refused_from_the_next_request(server, db) -> None:
    token = _token(db, "read")
    assert request("GET", server.url + "/v1/status", token=token).status == 200
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (token.split("_")[1],))
    assert request("GET", server.url + "/v1/status", token=token).status == 401


def test_scopes(server, db, ingest_bytes) -> None:
    doc = ingest_bytes(b"a document", "d.txt").document_id
    read, write = _token(db, "read"), _token(db, "write")
    for token in (read, write):
        assert request("GET", server.url + "/v1/status", token=token).status == 200
        assert request("GET", f"{server.url}/v1/documents/{doc}", token=token).status == 200
    before = snapshot(db)
    refused = _upload(server.url, read)
    assert refused.status == 403
    assert refused.json()["required_scope"] == "write"
    assert snapshot(db) == before
    assert _upload(server.url, write).status == 201


def test_probes_stay_open_and_unknown_v1_paths_do_not_leak(server) -> None:
    assert request("GET", server.url + "/healthz", token=None).status == 200
    assert request("GET", server.url + "/readyz", token=None).status == 503  # no workers
    # Without a token, nothing under /v1 tells a route that exists from one that does not.
    assert request("GET", server.url + "/v1/nothing-here", token=None).status == 401
    assert request("PUT", server.url + "/v1/status", token=None).status == 401
    assert request("GET", server.url + "/v1/nothing-here").status == 404
    assert request("PUT", server.url + "/v1/status").status == 405
    assert request("GET", server.url + "/elsewhere", token=None).status == 404


def test_every_registered_route_has_an_access_rule(make_settings, db_url) -> None:
    app = build_app(make_settings(), url=db_url)
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert registered, "the app registers routes"
    assert registered - set(ACCESS) == set()
    # Each scope's routes, as the issue states them.
    assert ACCESS[("POST", "/v1/webhooks/llamaparse")] is Access.SIGNED
    assert {k for k, v in ACCESS.items() if v is Access.OPEN} == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/openapi.json"),
    }
    assert all(v is Access.READ for (m, _), v in ACCESS.items() if m == "GET" and v.scope)
    assert ACCESS[("DELETE", "/v1/documents/{document_id}")] is Access.ADMIN


class _UnlistedRouteServer(AppServer):
    async def start(self) -> None:
        original = build_app

        def with_extra(*args, **kwargs):
            app = original(*args, **kwargs)

            async def handler(_request: web.Request) -> web.Response:
                return web.json_response({"reached": True})

            app.router.add_get("/v1/unlisted", handler)
            app.router.add_get("/unlisted-outside", handler)
            return app

        import tests.supervisor.http.http_harness as harness

        harness.build_app = with_extra
        try:
            await super().start()
        finally:
            harness.build_app = original


def test_a_route_missing_from_the_table_is_refused_to_every_token(http_settings, db_url, db):
    with running(_UnlistedRouteServer(http_settings, db_url)) as app:
        for path in ("/v1/unlisted", "/unlisted-outside"):
            assert request("GET", app.url + path, token=None).status == 401
            reply = request("GET", app.url + path)  # admin
            assert reply.status == 403 and "no access rule" in reply.json()["detail"]


def test_below_admin_the_status_and_documents_show_no_hosts_pids_or_paths(server, db) -> None:
    doc = ingest_stream(
        db, io.BytesIO(b"private path"), source="/srv/private/dir/report.txt", filename="report.txt"
    ).document_id
    db.execute(
        "INSERT INTO supervisor_status (supervisor, pid, hostname, started_at, state, details)"
        " VALUES ('db7.internal:4242', 4242, 'db7.internal', now(), 'running',"
        ' \'{"config_path": "/etc/ingestd/secret.toml", "http_pid": 4243,'
        ' "breakers": {"openai": "closed"}, "workers_target": 2}\')'
    )
    db.execute(
        "INSERT INTO worker_status (supervisor, slot, pid, owner, started_at, heartbeat_at)"
        " VALUES ('db7.internal:4242', 0, 4250, 'db7.internal:4242:0:0', now(), now())"
    )
    admin_status = request("GET", server.url + "/v1/status").body.decode()
    for secret in ("db7.internal", "4242", "4250", "/etc/ingestd/secret.toml"):
        assert secret in admin_status
    admin_doc = request("GET", f"{server.url}/v1/documents/{doc}").json()
    assert admin_doc["document"]["source"] == "/srv/private/dir/report.txt"

    for scope in ("read", "write"):
        token = _token(db, scope)
        reply = request("GET", server.url + "/v1/status", token=token)
        assert reply.status == 200
        text = reply.body.decode()
        for secret in ("db7.internal", "4242", "4243", "4250", "/etc/ingestd", "secret.toml"):
            assert secret not in text, (scope, secret)
        body = reply.json()
        (sup,) = body["supervisors"]
        (worker,) = body["workers"]
        assert worker["supervisor"] == sup["supervisor"] and sup["supervisor"] in body["breakers"]
        assert sup["details"] == {"breakers": {"openai": "closed"}, "workers_target": 2}
        assert body["documents"]["queued"] == 1  # the counts are all there
        shown = request("GET", f"{server.url}/v1/documents/{doc}", token=token)
        assert shown.json()["document"]["source"] == "report.txt"
        assert "/srv/private" not in shown.body.decode()


def test_no_server_banner_even_on_a_parser_error(server) -> None:
    reply = request("GET", server.url + "/healthz")
    assert reply.headers["Server"] == "ingestd"
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NOT A REQUEST LINE\x00\r\n\r\n")
        raw = _read_all(sock)
    assert raw.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), raw[:80]
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"server: ingestd" in head
    assert b"aiohttp" not in raw.lower() and b"python" not in raw.lower()


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


# -- the webhook-only listener --------------------------------------------------------------


def test_the_webhook_listener_serves_the_webhook_and_nothing_else(
    http_settings, db_url, db, ingest_bytes
) -> None:
    doc = ingest_bytes(b"to be parsed remotely", "r.txt").document_id
    park(db, doc, JOB_PARKED_BY)
    with running(AppServer(http_settings, db_url, webhook_listener=True)) as app:
        hook = app.webhook_url
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/v1/status"),
            ("POST", "/v1/documents"),
            ("GET", f"/v1/documents/{doc}"),
            ("GET", "/v1/webhooks/llamaparse"),
        ):
            reply = request(method, hook + path)  # even with the admin token
            assert reply.status == 404, (method, path, reply.body)
            assert reply.json()["detail"] == "not found"
        # The webhook itself answers there, checking its own signature.
        body = event_body(JOB_PARKED_BY, "parse.error", error_message="corrupt")
        unsigned = request("POST", hook + "/v1/webhooks/llamaparse", data=body, token=None)
        assert unsigned.status == 401
        signed = request(
            "POST",
            hook + "/v1/webhooks/llamaparse",
            data=body,
            headers=signed_headers(body),
            token=None,
        )
        assert signed.status == 200 and signed.json()["status"] == "failed"
        # The API listener is unchanged.
        assert request("GET", app.url + "/v1/status").status == 200


def test_webhook_host_needs_a_port(make_settings) -> None:
    with pytest.raises(ConfigError, match="webhook_host"):
        make_settings(webhook_host="0.0.0.0")
    assert make_settings(webhook_port=8471).webhook_host is None


# -- refusing to start exposed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.8.0.1", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("api.example.com", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_listener_without_a_token_refuses_to_start(make_settings, db_url, db) -> None:
    db.execute("TRUNCATE api_tokens")
    exposed = make_settings(http_host="0.0.0.0", http_port=0, webhook_secret="s" * 32)
    with pytest.raises(ConfigError, match=r"ingestd token create --name"):
        asyncio.run(serve(exposed, url=db_url))
    # Revoked or expired tokens do not count.
    dead = _token(db, "admin", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert dead
    with pytest.raises(ConfigError):
        asyncio.run(serve(exposed, url=db_url))
    # Loopback needs none; an exposed listener with a live token starts (and stops at once).
    db.execute("TRUNCATE api_tokens")
    stop = asyncio.Event()
    stop.set()
    asyncio.run(serve(make_settings(http_port=0), url=db_url, stop=stop))
    _token(db, "read")
    asyncio.run(serve(exposed, url=db_url, stop=stop))


def test_the_http_child_exits_as_a_configuration_error(make_settings, db) -> None:
    db.execute("TRUNCATE api_tokens")
    settings = make_settings(http_host="0.0.0.0", http_port=0, webhook_secret="s" * 32)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            from ingestd.supervisor.http.app import http_main

            http_main(settings, None)
        finally:
            os._exit(EXIT_CRASH)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == EXIT_CONFIG
