"""A gateway SIGKILLed in the middle of a ladder resumes it at the right step: no SMS twice, none skipped."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from firmware_sim.phonenet import EventKind, PhoneNetwork
from gateway.identity.pki import PkiLayout
from gateway.store.db import open_database
from gateway.store.models import IncidentEvent
from tests import services
from tests.conftest import enroll, http_client, observe
from tests.escalation.conftest import ACCOUNT_SID, AUTH_TOKEN, GATEWAY_NUMBER, PEOPLE, directory_toml, step

#: Four SMS rungs, one person each, then the broadcast to all four: each person gets exactly two texts.
RUNG_S = 1.5
ORDER = ("ana", "bo", "cy", "sam")


@pytest.mark.slow
async def test_a_ladder_survives_two_sigkills_without_doubling_or_skipping_a_message(
    pki: PkiLayout, db_url: str, phone_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    device_id = f"wb-{uuid.uuid4().hex[:10]}"
    directory = tmp_path / "escalation.toml"
    steps = "".join(step("sms", RUNG_S, f"responder:{rid}") for rid in ORDER)
    directory.write_text(directory_toml(steps).replace("{device}", device_id))
    async with open_database(db_url):
        wearable = await enroll(pki, device_id, wearer="Ada Lovelace")
    port = services.free_port()
    public_url = f"https://127.0.0.1:{port}"
    prefix = f"crash-ladder/{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "gateway.log").open("wb")

    async with PhoneNetwork(ACCOUNT_SID, AUTH_TOKEN, ssl_context=phone_ssl) as net:
        net.own_number(GATEWAY_NUMBER, sms_url=f"{public_url}/v1/twilio/sms")
        for name, phone in PEOPLE.values():
            net.phone(phone, name=name)
        env = {
            **os.environ,
            "PANIC_GATEWAY_ID": "ladder-crash-gw",
            "PANIC_HTTP__PORT": str(port),
            "PANIC_HTTP__TLS_CERT": str(pki.server_cert),
            "PANIC_HTTP__TLS_KEY": str(pki.server_key),
            "PANIC_DATABASE__URL": db_url,
            "PANIC_MQTT__TOPIC_PREFIX": prefix,
            "PANIC_PKI__DIRECTORY": str(pki.directory),
            "PANIC_LOG__LEVEL": "WARNING",
            "PANIC_TWILIO__ENABLED": "true",
            "PANIC_TWILIO__ACCOUNT_SID": ACCOUNT_SID,
            "PANIC_TWILIO__AUTH_TOKEN": AUTH_TOKEN,
            "PANIC_TWILIO__FROM_NUMBER": GATEWAY_NUMBER,
            "PANIC_TWILIO__API_BASE_URL": net.base_url,
            "PANIC_TWILIO__PUBLIC_URL": public_url,
            "PANIC_TWILIO__RETRY_MIN_S": "0.1",
            "PANIC_TWILIO__RETRY_MAX_S": "0.5",
            "PANIC_ESCALATION__FILE": str(directory),
            "PANIC_ESCALATION__TICK_S": "0.1",
        }

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], env=env, stdout=log, stderr=log)

        def alerts_to(rid: str) -> int:
            phone = PEOPLE[rid][1]
            return sum(1 for e in net.find(EventKind.MESSAGE_CREATED, direction="outbound-api") if e.to == phone)

        async def kill_and_restart(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            return start()

        proc = start()
        try:
            async with observe(prefix) as cc, http_client(client_ssl) as http:
                await asyncio.to_thread(services.wait_port, "127.0.0.1", port, 30)
                async with http.post(
                    f"{public_url}/v1/signals",
                    data=wearable.frame(),
                    headers={"Content-Type": "application/vnd.panic.frame.v1"},
                ) as r:
                    assert r.status == 202, await r.text()
                    alert_id = (await r.json())["incident_id"]
                # Killed right after the second rung's SMS left, and again right after the third's.
                await net.wait_for(lambda n: alerts_to("bo") == 1, 30)
                proc = await kill_and_restart(proc)
                await net.wait_for(lambda n: alerts_to("cy") == 1, 30)
                proc = await kill_and_restart(proc)
                await cc.wait_for(lambda o: o.states.get(alert_id, {}).get("state") == "exhausted", 60)
                await net.wait_for(lambda n: all(alerts_to(rid) == 2 for rid in ORDER), 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except TimeoutError:
                proc.kill()
            log.close()

        texts = {
            rid: [e.detail["body"] for e in net.find(EventKind.HANDSET_SMS) if e.to == PEOPLE[rid][1]] for rid in ORDER
        }
    for rid in ORDER:
        bodies = [e.detail["body"] for e in net.find(EventKind.MESSAGE_CREATED) if e.to == PEOPLE[rid][1]]
        assert len(bodies) == 2, (rid, bodies)  # one rung, one broadcast: nothing doubled, nothing skipped
        assert bodies[0].startswith("PANIC: Ada Lovelace") and bodies[1].startswith("NOBODY ANSWERED"), bodies
        assert len(texts[rid]) == 2
    async with open_database(db_url):
        started = await IncidentEvent.filter(incident_id=alert_id, type="step-started").order_by("id")
        assert [e.detail["step"] for e in started] == [0, 1, 2, 3]
        assert await IncidentEvent.filter(incident_id=alert_id, type="exhausted").count() == 1
