"""The console's sign-in, sessions, CSRF, roles and live stream, against a real gateway over HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from gateway.console.feed import Change, IncidentFeed, parse_cursor
from gateway.console.store import disable_operator
from gateway.observability import Metrics
from gateway.store.models import AuditEntry, Incident
from tests.conftest import GatewayFactory, enroll, http_client, post_frame
from tests.console.webclient import PASSWORD, ConsoleUser, add_user, console_user, read_events


async def press(gw: Any, pki: Any, client_ssl: ssl.SSLContext, *, wearer: str = "Ada Test") -> str:
    wearable = await enroll(pki, wearer=wearer)
    async with http_client(client_ssl) as http:
        status, body, _ = await post_frame(http, gw, wearable.frame())
    assert status == 202, body
    alert_id: str = body["incident_id"]
    return alert_id


async def signed_in(user: ConsoleUser, name: str) -> None:
    r = await user.sign_in(name)
    assert r.status == 303, r.status
    await user.open_console()


async def test_sign_in_sets_a_strict_httponly_secure_cookie_and_opens_the_console(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        async with user.http.get(f"{gw.http_url}/console/", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/login")
        r = await user.sign_in("ana")
        assert (r.status, r.headers["Location"]) == (303, "/console/")
        cookie = SimpleCookie(r.headers["Set-Cookie"])["panic_session"]
        assert cookie["httponly"] and cookie["secure"]
        assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
        page = await user.open_console()
        assert 'data-operator="ana"' in page
        status, me = await user.call("GET", "/v1/me")
        assert status == 200
        assert (me["name"], me["role"], me["via"]) == ("ana", "operator", "session")
        assert me["permissions"] == ["view", "acknowledge", "resolve"]
        assert me["csrf_token"] == user.csrf
        async with user.http.get(f"{gw.http_url}/console/") as r:
            policy = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert await AuditEntry.filter(actor="ana", action="login").count() == 1


async def test_a_wrong_password_gets_the_form_again_with_401_and_no_session(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        csrf = (await user.login_page()).split('name="csrf" value="')[1].split('"')[0]
        form = {"name": "ana", "password": "not the password", "csrf": csrf}
        async with user.http.post(f"{gw.http_url}/console/login", data=form, allow_redirects=False) as r:
            assert r.status == 401
            assert "Wrong name or password." in await r.text()
            assert "panic_session" not in r.cookies
        status, body = await user.call("GET", "/v1/me")
        assert (status, body["reason"]) == (401, "unauthorized")
        failed = await AuditEntry.filter(action="login.failed").values_list("detail", flat=True)
        assert [d["reason"] for d in failed] == ["wrong password"]  # type: ignore[index]


async def test_signing_in_without_the_forms_csrf_token_is_refused(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        await user.login_page()  # has the pre-session cookie, but sends no token (a cross-site form would not)
        form = {"name": "ana", "password": PASSWORD}
        async with user.http.post(f"{gw.http_url}/console/login", data=form, allow_redirects=False) as r:
            body = await r.json(content_type=None)
            assert (r.status, r.content_type, body["reason"]) == (403, "application/problem+json", "csrf-failed")
            assert "panic_session" not in r.cookies


async def test_sign_in_attempts_are_limited_per_account(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        statuses = [(await user.sign_in("ana", "guess number one")).status for _ in range(5)]
        assert statuses == [401] * 5
        r = await user.sign_in("ana")  # even the right password waits now
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1


async def test_changes_made_with_the_session_cookie_need_the_csrf_token_and_our_origin(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext, pki: Any
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        await signed_in(user, "ana")
        alert_id = await press(gw, pki, client_ssl)
        ack = f"/v1/incidents/{alert_id}/ack"
        status, body = await user.call("POST", ack, csrf=False, json={})
        assert (status, body["reason"]) == (403, "csrf-failed")
        status, body = await user.call("POST", ack, csrf=False, json={}, headers={"X-CSRF-Token": "0" * 64})
        assert (status, body["reason"]) == (403, "csrf-failed")
        status, body = await user.call("POST", ack, json={}, headers={"Origin": "https://evil.example"})
        assert (status, body["reason"]) == (403, "csrf-failed")
        status, body = await user.call("POST", ack, json={}, headers={"Origin": gw.http_url})
        assert (status, body["state"]) == (200, "acknowledged")
        status, incident = await user.call("GET", f"/v1/incidents/{alert_id}")
        assert incident["acknowledged_by"] == "ana"  # who signed in, whatever the body says
        assert await AuditEntry.filter(actor="ana", action="incident.acknowledge", target=alert_id).exists()


async def test_a_viewer_may_look_but_not_acknowledge(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext, pki: Any
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("vic", "viewer")
        await signed_in(user, "vic")
        alert_id = await press(gw, pki, client_ssl)
        status, me = await user.call("GET", "/v1/me")
        assert me["permissions"] == ["view"]
        status, incident = await user.call("GET", f"/v1/incidents/{alert_id}")
        assert status == 200 and incident["state"] in ("raised", "notifying")
        status, body = await user.call("POST", f"/v1/incidents/{alert_id}/ack", json={})
        assert (status, body["reason"]) == (403, "forbidden")
        assert "viewer" in body["detail"]
        status, body = await user.call("POST", f"/v1/incidents/{alert_id}/resolve", json={"reason": "handled"})
        assert (status, body["reason"]) == (403, "forbidden")


async def test_sign_out_and_disabling_end_the_session(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw:
        await add_user("ana", "operator")
        async with console_user(gw, client_ssl) as user:
            await signed_in(user, "ana")
            async with user.http.post(
                f"{gw.http_url}/console/logout", data={"csrf": user.csrf}, allow_redirects=False
            ) as r:
                assert (r.status, r.headers["Location"]) == (303, "/console/login")
            status, _ = await user.call("GET", "/v1/me")
            assert status == 401
        async with console_user(gw, client_ssl) as user:
            await signed_in(user, "ana")
            await disable_operator("ana")
            status, _ = await user.call("GET", "/v1/me")
            assert status == 401
            assert (await user.sign_in("ana")).status == 401


async def test_console_assets_are_served_by_the_gateway(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, http_client(client_ssl) as http:
        for path in ("/console/static/console.js", "/console/static/console.css", "/console/vendor/leaflet/leaflet.js"):
            async with http.get(f"{gw.http_url}{path}") as r:
                assert r.status == 200, path
                assert len(await r.read()) > 1000, path


async def test_the_stream_shows_a_new_alert_within_a_second_and_resumes_from_last_event_id(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext, pki: Any
) -> None:
    async with gateway_factory() as gw, console_user(gw, client_ssl) as user:
        await add_user("ana", "operator")
        await signed_in(user, "ana")
        timeout = aiohttp.ClientTimeout(total=None, sock_read=20)
        async with user.http.get(f"{gw.http_url}/v1/stream", timeout=timeout) as stream:
            assert stream.status == 200
            assert stream.content_type == "text/event-stream"
            events = read_events(stream)
            loop = asyncio.get_running_loop()
            pressed_at = loop.time()
            alert_id = await press(gw, pki, client_ssl, wearer="Grace Hopper")
            cursor = ""
            async for event_id, kind, data in events:
                if kind == "incident" and data["alert_id"] == alert_id:
                    cursor = event_id
                    break
            assert loop.time() - pressed_at < 1.0
            assert data["device"]["wearer"] == "Grace Hopper"
            assert data["state"] in ("raised", "notifying")
            assert "time_zone" in data
        # Offline while the alert is acknowledged: back with Last-Event-ID, the change arrives first.
        status, _ = await user.call("POST", f"/v1/incidents/{alert_id}/ack", json={})
        assert status == 200
        assert parse_cursor(cursor) is not None
        async with user.http.get(
            f"{gw.http_url}/v1/stream", headers={"Last-Event-ID": cursor}, timeout=timeout
        ) as stream:
            async for _, _kind, data in read_events(stream):
                if data["alert_id"] == alert_id and data["state"] == "acknowledged":
                    break
            assert data["acknowledged_by"] == "ana"


async def test_the_stream_needs_credentials(gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext) -> None:
    async with gateway_factory() as gw, http_client(client_ssl) as http, http.get(f"{gw.http_url}/v1/stream") as r:
        assert r.status == 401
        assert (await r.json(content_type=None))["reason"] == "unauthorized"


async def test_an_open_incident_whose_change_committed_late_still_reaches_the_stream(
    gateway_factory: GatewayFactory, client_ssl: ssl.SSLContext, pki: Any
) -> None:
    async with gateway_factory() as gw:
        alert_id = await press(gw, pki, client_ssl)
        async with IncidentFeed(lambda site: None, Metrics(), sweep_s=0.2) as feed, feed.subscribe() as queue:

            async def next_revision_of(revision: int) -> Change:
                while True:
                    change = await asyncio.wait_for(queue.get(), 10)
                    assert change is not None
                    if change.alert_id == alert_id and change.revision >= revision:
                        return change

            first = await next_revision_of(1)
            # A transaction that stamped its change a minute ago commits only now (a stalled database): it is
            # older than anything the polls look back to, and only the sweep of open incidents can find it.
            stale = datetime.now(UTC) - timedelta(minutes=1)
            await Incident.filter(id=alert_id).update(revision=first.revision + 1, updated_at=stale)
            late = await next_revision_of(first.revision + 1)
            assert json.loads(late.data)["revision"] == first.revision + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1763716443120-3", datetime(2025, 11, 21, 9, 14, 3, 120000, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("abc", None),
        ("1-", None),
        ("99999999999999999-1", None),
    ],
)
def test_stream_cursors(value: str | None, expected: datetime | None) -> None:
    assert parse_cursor(value) == expected
