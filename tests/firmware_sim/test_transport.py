"""HttpUplink against scripted local servers: retries, Retry-After, final answers, deadlines, connections, mTLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web

from firmware_sim import HttpUplink, VirtualWearable
from firmware_sim.transport import _retry_after
from gateway.protocol.const import MEDIA_TYPE
from tests.firmware_sim.conftest import StartScriptedServer, ThrowawayCa, scripted_problem

INCIDENT = "4f1c2a9e-0000-4000-8000-000000000001"


def accepted(status: str = "accepted") -> web.Response:
    return web.json_response(
        {"incident_id": INCIDENT, "status": status, "delayed": False, "event": "panic"}, status=202
    )


Answer = Callable[[], web.Response]


class Script:
    """Answers requests in turn from a list (repeating the last), recording each body, media type and port."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.ports: list[int] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        self.content_types.append(request.content_type)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append(peer[1] if peer else -1)
        return (self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])()


async def test_503_with_retry_after_is_retried_with_the_same_bytes_after_the_wait(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    script = Script(lambda: scripted_problem("overloaded", "busy", retry_after="1"), accepted)
    signed = wearable.press()
    async with HttpUplink(await scripted_server(script.handle)) as uplink:
        result = await uplink.send(signed, deadline_s=5)
    assert (result.status_code, result.status, result.incident_id, result.final) == (202, "accepted", INCIDENT, True)
    assert result.attempts == 2 and result.event == "panic" and result.accepted
    assert result.latency_s >= 1.0  # Retry-After honoured
    assert script.bodies == [signed, signed]
    assert script.content_types == [MEDIA_TYPE, MEDIA_TYPE]


async def test_429_is_retried_and_a_retry_after_beyond_the_deadline_gives_up_at_once(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    limited = Script(lambda: scripted_problem("rate-limited", "slow down", retry_after="0"), accepted)
    async with HttpUplink(await scripted_server(limited.handle)) as up:
        result = await up.send(wearable.heartbeat(), deadline_s=5)
    assert (result.status_code, result.attempts, result.final) == (202, 2, True)

    limited = Script(lambda: scripted_problem("rate-limited", "slow down", retry_after="60"))
    async with HttpUplink(await scripted_server(limited.handle)) as up:
        result = await up.send(wearable.heartbeat(), deadline_s=2)
    assert (result.status_code, result.reason, result.attempts, result.final) == (429, "rate-limited", 1, False)
    assert result.latency_s < 1 and result.label == "429 rate-limited" and not result.accepted


async def test_409_is_final_after_one_attempt(scripted_server: StartScriptedServer, wearable: VirtualWearable) -> None:
    script = Script(lambda: scripted_problem("replayed", "counter 7 was already used"))
    async with HttpUplink(await scripted_server(script.handle)) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert (result.status_code, result.reason, result.detail) == (409, "replayed", "counter 7 was already used")
    assert (result.attempts, result.final, result.accepted, result.label) == (1, True, False, "409 replayed")
    assert len(script.bodies) == 1


async def test_5xx_without_retry_after_backs_off_and_retries(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    script = Script(
        lambda: web.Response(status=502, text="bad gateway"),
        lambda: web.Response(status=500),
        lambda: accepted("duplicate"),
    )
    async with HttpUplink(await scripted_server(script.handle), backoff_initial_s=0.05) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert (result.status_code, result.status, result.attempts) == (202, "duplicate", 3)


async def test_a_non_json_error_body_becomes_the_detail(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    script = Script(lambda: web.Response(status=404, text="no such route"))
    async with HttpUplink(await scripted_server(script.handle)) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert (result.status_code, result.reason, result.detail, result.final) == (404, None, "no such route", True)


async def test_a_closed_port_is_retried_until_the_deadline(wearable: VirtualWearable) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    async with HttpUplink(f"http://127.0.0.1:{port}", backoff_initial_s=0.05, backoff_max_s=0.2) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=1.0)
    assert result.status_code is None and not result.final and not result.accepted
    assert result.attempts >= 3
    assert 0.5 < result.latency_s < 1.2  # stops retrying once no retry can start before the deadline
    assert "Cannot connect" in result.detail or "Connect" in result.detail
    assert result.label == "no answer"


async def test_a_hung_attempt_times_out_and_the_retry_succeeds(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    calls = 0

    async def slow_then_fine(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(2)
        return accepted()

    async with HttpUplink(
        await scripted_server(slow_then_fine), request_timeout_s=0.3, backoff_initial_s=0.05
    ) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert (result.status_code, result.attempts) == (202, 2)
    assert result.latency_s < 1.5


async def test_without_keep_alive_every_signal_opens_a_new_connection(
    scripted_server: StartScriptedServer, wearable: VirtualWearable
) -> None:
    script = Script(accepted)
    url = await scripted_server(script.handle)
    async with HttpUplink(url, keep_alive=False) as uplink:
        for _ in range(3):
            assert (await uplink.send(wearable.heartbeat(), deadline_s=5)).accepted
    async with HttpUplink(url, keep_alive=True) as uplink:
        for _ in range(3):
            assert (await uplink.send(wearable.heartbeat(), deadline_s=5)).accepted
    assert len(set(script.ports[:3])) == 3
    assert len(set(script.ports[3:])) == 1


async def test_https_with_mtls_presents_the_device_certificate(
    scripted_server: StartScriptedServer,
    wearable: VirtualWearable,
    ca: ThrowawayCa,
    ca_file: Path,
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        assert ssl_object is not None
        subject = dict(item[0] for item in ssl_object.getpeercert()["subject"])
        seen.append(subject["commonName"])
        return accepted()

    url = await scripted_server(handler, ssl_context=ca.server_context(tmp_path, require_client_cert=True))
    async with HttpUplink(url, ca_file=ca_file, client_cert=wearable.client_certificate) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert result.accepted and seen == ["w-0001"]


async def test_a_server_the_ca_does_not_vouch_for_is_final_not_retried(
    scripted_server: StartScriptedServer, wearable: VirtualWearable, tmp_path: Path, ca_file: Path
) -> None:
    from tests.firmware_sim.conftest import make_ca

    url = await scripted_server(Script(accepted).handle, ssl_context=make_ca("Other CA").server_context(tmp_path))
    async with HttpUplink(url, ca_file=ca_file) as uplink:
        result = await uplink.send(wearable.press(), deadline_s=5)
    assert result.status_code is None and result.final and result.attempts == 1
    assert "server certificate not trusted" in result.detail and result.label == "untrusted server"


def test_uplink_arguments_are_checked(ca_file: Path, wearable: VirtualWearable) -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpUplink("ftp://gateway")
    with pytest.raises(ValueError, match="mTLS needs an https"):
        HttpUplink("http://127.0.0.1:1", client_cert=wearable.client_certificate)
    with pytest.raises(ssl.SSLError):
        HttpUplink("https://127.0.0.1:1", ca_file=wearable.client_certificate.key_file)


async def test_send_outside_the_context_manager_is_a_programming_error(wearable: VirtualWearable) -> None:
    with pytest.raises(RuntimeError, match="outside"):
        await HttpUplink("http://127.0.0.1:1").send(wearable.press())


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after(None) is None
    assert _retry_after("3") == 3.0
    assert _retry_after("-4") == 0.0
    assert _retry_after("soon") is None
    assert _retry_after("nan") is None
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    seconds = _retry_after(in_ten)
    assert seconds is not None and 8 <= seconds <= 10
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert _retry_after(past) == 0.0
