"""A simulated wearable without data: HTTPS fails on the network, the same signed frame goes out as an SMS through
the phone network simulator, and the real gateway raises the incident and escalates it as for any press.
"""

from __future__ import annotations

from firmware_sim.sms_uplink import FallbackUplink, SmsUplink
from firmware_sim.transport import HttpUplink
from gateway.identity.pki import PkiLayout
from gateway.protocol import EventType
from gateway.store.models import Signal
from tests import services
from tests.escalation.conftest import GATEWAY_NUMBER, WAIT_S, WEARER_PHONE, SceneFactory, step

#: HTTPS attempts before the text goes out: long enough for a few refused connections, short for a test.
PRIMARY_DEADLINE_S = 1.0


def no_data(pki: PkiLayout) -> HttpUplink:
    """An uplink to a port nobody listens on: every attempt is a refused connection, as without a data bearer."""
    return HttpUplink(f"https://127.0.0.1:{services.free_port()}", ca_file=pki.root_ca_cert, backoff_initial_s=0.05)


async def test_a_press_without_data_arrives_by_sms_and_the_ladder_texts_the_responder(
    scene: SceneFactory, pki: PkiLayout
) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, no_data(pki) as https:
        sms = SmsUplink(s.net, phone=WEARER_PHONE, gateway_number=GATEWAY_NUMBER)
        uplink = FallbackUplink(https, sms, primary_deadline_s=PRIMARY_DEADLINE_S)
        result = await uplink.send(s.wearable.frame(EventType.PANIC))

        assert result.accepted and result.final, result
        assert result.transport == "sms"
        assert result.detail.startswith("Alert received. Help is being arranged. (by SMS: HTTPS gave no answer: ")
        assert result.attempts >= 3  # the refused HTTPS attempts, then the text
        await s.observer.wait_for(lambda o: len(o.states) == 1, WAIT_S)
        (state,) = s.observer.states.values()
        assert state["transport"] == "sms" and state["device"]["id"] == s.wearable.device_id
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        (alert,) = s.texts_to("ana")
        assert alert.startswith("PANIC: Ada Lovelace at site north") and f"Reply {state['short_code']}" in alert
        assert await Signal.filter(device_id=s.wearable.device_id).count() == 1
        # The wearable's phone got the gateway's confirmation as a text too.
        wearer = s.net.phone(WEARER_PHONE)
        await s.net.wait_for(lambda n: len(wearer.inbox) == 1, WAIT_S)
        assert wearer.inbox[0].body == "Alert received. Help is being arranged."


async def test_with_data_the_press_goes_over_https_and_nothing_is_texted(scene: SceneFactory, pki: PkiLayout) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s:
        async with HttpUplink(s.gateway.http_url, ca_file=pki.root_ca_cert) as https:
            sms = SmsUplink(s.net, phone=WEARER_PHONE, gateway_number=GATEWAY_NUMBER)
            result = await FallbackUplink(https, sms, primary_deadline_s=PRIMARY_DEADLINE_S).send(s.wearable.frame())
        assert result.accepted and result.transport == "https" and result.incident_id is not None
        await s.observer.wait_for(lambda o: result.incident_id in o.states, WAIT_S)
        assert s.observer.states[result.incident_id]["transport"] == "https"
        assert [e for e in s.net.events if e.from_ == WEARER_PHONE] == []


async def test_a_text_from_a_phone_the_device_is_not_registered_with_gets_no_confirmation(
    scene: SceneFactory, pki: PkiLayout
) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, no_data(pki) as https:
        stranger = SmsUplink(s.net, phone="+15559990000", gateway_number=GATEWAY_NUMBER)
        result = await FallbackUplink(https, stranger, primary_deadline_s=PRIMARY_DEADLINE_S).send(s.wearable.frame())
        assert not result.accepted and not result.final and result.status_code is None
        assert result.transport == "sms" and result.label == "no answer"
        assert "did not confirm the alert" in result.detail
        assert s.observer.states == {}


async def test_a_heartbeat_by_sms_is_taken_without_a_reply(scene: SceneFactory) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s:
        sms = SmsUplink(s.net, phone=WEARER_PHONE, gateway_number=GATEWAY_NUMBER)
        result = await sms.send(s.wearable.frame(EventType.HEARTBEAT))
        assert result.accepted and result.transport == "sms" and result.detail == "SMS taken"
        assert await Signal.filter(device_id=s.wearable.device_id, event="heartbeat").count() == 1
        assert s.observer.states == {}
