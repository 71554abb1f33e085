"""Escalation end to end: a press over HTTPS or SMS, the ladder over the real broker and the phone network simulator
(through the real twilio library and signed webhooks), acknowledgements from every channel, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import ssl

import aiohttp
from twilio.request_validator import RequestValidator
from yarl import URL

from firmware_sim.phonenet import Behaviour, EventKind, PhoneNetwork
from gateway.protocol import EventType
from gateway.protocol.sms import encode_sms
from gateway.store.models import IncidentEvent, Ladder, Notification
from tests.conftest import http_client, post_frame
from tests.escalation.conftest import (
    API_TOKEN,
    AUTH_TOKEN,
    GATEWAY_NUMBER,
    PEOPLE,
    WAIT_S,
    WEARER_PHONE,
    Scene,
    SceneFactory,
    step,
)


async def press(s: Scene, client_ssl: ssl.SSLContext, event: EventType = EventType.PANIC) -> str:
    async with http_client(client_ssl) as http:
        status, body, _ = await post_frame(http, s.gateway, s.wearable.frame(event))
    assert status == 202, body
    alert_id = body["incident_id"]
    assert isinstance(alert_id, str)
    return alert_id


async def state_is(s: Scene, alert_id: str, state: str) -> None:
    await s.observer.wait_for(lambda o: o.states.get(alert_id, {}).get("state") == state, WAIT_S)


async def event_types(alert_id: str) -> list[str]:
    return list(await IncidentEvent.filter(incident_id=alert_id).order_by("id").values_list("type", flat=True))


async def ladder_settled(alert_id: str) -> Ladder:
    ladder = await Ladder.get(incident_id=alert_id)
    assert not ladder.active and ladder.next_at is None  # no timer left: nothing more will be sent
    return ladder


async def test_an_sms_reply_with_the_code_acknowledges_and_stops_the_ladder(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 30, "responder:ana") + step("voice", 30, "responder:bo")
    async with scene(steps, behaviours={"ana": Behaviour(reply="ok {code}")}) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "acknowledged")
        state = s.observer.states[alert_id]
        assert state["acknowledged_by"] == "Ana Guard"
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 2, WAIT_S)  # the alert, then "You have it"
        alert, confirmation = s.texts_to("ana")
        assert alert.startswith("PANIC: Ada Lovelace at site north") and f"Reply {state['short_code']}" in alert
        assert "Diabetic" in alert
        assert confirmation.startswith("You have it: Ada Lovelace")
        await ladder_settled(alert_id)
        assert s.calls_to("bo") == 0
        types = await event_types(alert_id)
        assert types[:3] == ["raised", "notifying", "step-started"]
        assert "acknowledged" in types and "exhausted" not in types
        acked = await IncidentEvent.get(incident_id=alert_id, type="acknowledged")
        assert acked.detail["via"] == "sms" and acked.detail["by"] == "Ana Guard"


async def test_pressing_1_in_the_call_acknowledges(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    async with scene(step("voice", 30, "responder:ana"), behaviours={"ana": Behaviour(call="answer", press="1")}) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "acknowledged")
        await s.net.wait_for(lambda n: bool(n.find(EventKind.CALL_STATUS, status="completed")), WAIT_S)
        (call,) = s.handsets["ana"].calls
        spoken = " ".join(call.spoken)
        assert "Panic alert. Ada Lovelace needs help at site north" in spoken
        assert "Press 1 to acknowledge" in spoken and "You have the alert" in spoken
        assert call.digits == ["1"]
        acked = await IncidentEvent.get(incident_id=alert_id, type="acknowledged")
        assert acked.detail["via"] == "voice"
        await ladder_settled(alert_id)


async def test_no_answer_and_pass_advance_without_waiting_for_the_timer(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = (
        step("voice", 600, "responder:bo", "responder:cy")  # a long wait: only the call results can end it
        + step("voice", 600, "responder:ana")
    )
    behaviours = {
        "bo": Behaviour(call="no-answer"),
        "cy": Behaviour(call="answer", press="2"),
        "ana": Behaviour(call="answer", press="1"),
    }
    async with scene(steps, behaviours=behaviours) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "acknowledged")
        assert (s.calls_to("bo"), s.calls_to("cy"), s.calls_to("ana")) == (1, 1, 1)
        ended = await IncidentEvent.get(incident_id=alert_id, type="step-ended")
        assert ended.detail == {"step": 0, "why": "all-final"}
        results = await IncidentEvent.filter(incident_id=alert_id, type="send-result").values_list("detail", flat=True)
        outcomes = {(d["to"], d["outcome"]) for d in results}
        assert {("Bo Guard", "no-answer"), ("Cy Guard", "passed")} <= outcomes


async def test_an_exhausted_ladder_broadcasts_to_the_site_and_the_supervisor(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 1, "responder:ana") + step("voice", 1, "responder:bo")
    async with scene(steps, behaviours={"bo": Behaviour(call="busy")}) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "exhausted")
        for rid in PEOPLE:
            await s.net.wait_for(lambda n, rid=rid: any("NOBODY ANSWERED" in t for t in s.texts_to(rid)), WAIT_S)
        exhausted = await IncidentEvent.get(incident_id=alert_id, type="exhausted")
        assert "supervisor Sam Super" in exhausted.detail["text"]
        assert exhausted.detail["supervisor"] == "Sam Super"
        assert sorted(exhausted.detail["broadcast_to"]) == sorted(name for name, _ in PEOPLE.values())
        # Still open: an acknowledgement after exhaustion is taken.
        assert s.observer.client is not None
        await s.observer.ack(alert_id, operator="op-night")
        await state_is(s, alert_id, "acknowledged")


async def test_a_cancel_from_the_wearer_stops_the_ladder_and_tells_who_was_notified(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 600, "responder:ana") + step("sms", 600, "responder:bo")
    async with scene(steps) as s:
        alert_id = await press(s, client_ssl)
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        await press_cancel(s, client_ssl)
        await state_is(s, alert_id, "cancelled")
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 2, WAIT_S)
        assert s.texts_to("ana")[1].startswith("CANCELLED by the wearer: Ada Lovelace")
        await ladder_settled(alert_id)
        assert s.messages_to("bo") == 0


async def test_a_cancel_after_an_acknowledgement_tells_the_responder_who_took_it(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("voice", 600, "responder:ana", "responder:bo")
    behaviours = {"ana": Behaviour(call="answer", press="1"), "bo": Behaviour(call="no-answer")}
    async with scene(steps, behaviours=behaviours) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "acknowledged")
        await press_cancel(s, client_ssl)
        await state_is(s, alert_id, "cancelled")
        await s.net.wait_for(lambda n: any(t.startswith("CANCELLED") for t in s.texts_to("ana")), WAIT_S)
        assert not any(t.startswith("CANCELLED") for t in s.texts_to("bo"))


async def press_cancel(s: Scene, client_ssl: ssl.SSLContext) -> None:
    async with http_client(client_ssl) as http:
        status, body, _ = await post_frame(http, s.gateway, s.wearable.frame(EventType.CANCEL))
    assert status == 202, body


async def test_rest_acknowledge_and_resolve_with_a_reason(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, http_client(client_ssl) as http:
        alert_id = await press(s, client_ssl)
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        base = f"{s.gateway.http_url}/v1/incidents/{alert_id}"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}

        async with http.post(f"{base}/ack", json={"note": "on my way"}) as r:
            assert r.status == 401 and r.content_type == "application/problem+json"
        async with http.post(f"{base}/ack", json={"note": "on my way"}, headers=auth) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["result"] == "acknowledged"
        async with http.post(f"{base}/ack", json={}, headers=auth) as r:
            assert (await r.json())["result"] == "already-acknowledged"
        await state_is(s, alert_id, "acknowledged")
        assert s.observer.states[alert_id]["acknowledged_by"] == "dispatch-desk"

        async with http.post(f"{base}/resolve", json={"reason": "lunch"}, headers=auth) as r:
            assert r.status == 422
            assert "false-alarm, handled, dispatched" in (await r.json())["detail"]
        async with http.post(f"{base}/resolve", json={"reason": "false-alarm", "note": "pocket"}, headers=auth) as r:
            assert r.status == 200, await r.text()
        await state_is(s, alert_id, "resolved")
        assert s.observer.states[alert_id]["resolution"] == "false-alarm"
        async with http.post(f"{base}/resolve", json={"reason": "handled"}, headers=auth) as r:
            assert r.status == 409
        async with http.get(base, headers=auth) as r:
            document = await r.json()
        assert document["state"] == "resolved" and document["resolved_by"] == "dispatch-desk"
        assert [n["to"] for n in document["notifications"]] == ["Ana Guard"]
        assert document["notifications"][0]["phone"] == "+1555***0001"
        types = [e["type"] for e in document["events"] if e["type"] != "send-result"]  # delivery reports interleave
        assert types[-2:] == ["acknowledged", "resolved"]
        async with http.post(f"{s.gateway.http_url}/v1/incidents/nope/ack", json={}, headers=auth) as r:
            assert r.status == 404
        await ladder_settled(alert_id)
        assert len(s.handsets["ana"].inbox) == 1


async def test_an_mqtt_acknowledgement_stops_the_ladder(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    steps = step("mqtt", 1) + step("sms", 600, "responder:ana")
    async with scene(steps) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "notifying")
        await s.observer.ack(alert_id, operator="op-1")
        await state_is(s, alert_id, "acknowledged")
        await ladder_settled(alert_id)
        assert s.messages_to("ana") == 0
        # The wearable's next contact (a heartbeat) learns that an operator has it.
        async with http_client(client_ssl) as http:
            status, body, _ = await post_frame(http, s.gateway, s.wearable.frame(EventType.HEARTBEAT))
        assert status == 202
        assert body["incident"] == {"id": alert_id, "state": "acknowledged", "acknowledged_by": "op-1"}


async def test_unsigned_and_mis_signed_webhooks_are_refused(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s, http_client(client_ssl) as http:
        url = f"{s.gateway.settings.twilio.public_url}/v1/twilio/sms"
        form = {"From": PEOPLE["ana"][1], "To": GATEWAY_NUMBER, "Body": "1234", "MessageSid": "SM" + "0" * 32}
        async with http.post(url, data=form) as r:
            assert r.status == 403 and r.content_type == "application/problem+json"
        forged = RequestValidator("not-the-token").compute_signature(url, form)
        async with http.post(url, data=form, headers={"X-Twilio-Signature": forged}) as r:
            assert r.status == 403
        signed = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        async with http.post(url, data=form, headers={"X-Twilio-Signature": signed}) as r:
            assert r.status == 200
        metrics = await _metrics(http, s)
        assert 'panic_twilio_webhooks_total{kind="sms-in",result="forbidden"} 2.0' in metrics


async def _metrics(http: aiohttp.ClientSession, s: Scene) -> str:
    async with http.get(f"{s.gateway.http_url}/metrics") as r:
        return await r.text()


async def test_a_wearable_without_data_alerts_by_sms_and_it_is_the_same_press_as_over_https(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s:
        frame = s.wearable.frame()
        result = await s.net.send_sms(from_=WEARER_PHONE, to=GATEWAY_NUMBER, body=encode_sms(frame))
        assert result.status == 200 and "Alert received" in result.body
        await s.observer.wait_for(lambda o: len(o.states) == 1, WAIT_S)
        ((alert_id, state),) = s.observer.states.items()
        assert state["transport"] == "sms"
        async with http_client(client_ssl) as http:  # the same signed frame, later, over HTTPS
            status, body, _ = await post_frame(http, s.gateway, frame)
        assert status == 202 and body == {**body, "incident_id": alert_id, "status": "duplicate"}
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        assert await Notification.filter(incident_id=alert_id).count() == 1


async def test_an_sms_frame_from_another_number_is_refused(scene: SceneFactory) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s:
        result = await s.net.send_sms(from_="+15559990000", to=GATEWAY_NUMBER, body=encode_sms(s.wearable.frame()))
        assert result.status == 200 and "Alert received" not in result.body
        garbage = await s.net.send_sms(from_=WEARER_PHONE, to=GATEWAY_NUMBER, body="A" * 129)  # not whole base64
        assert garbage.status == 200
        async with aiohttp.ClientSession() as http:
            metrics = await _plain_metrics(http, s)
        assert 'panic_twilio_webhooks_total{kind="sms-frame",result="device-mismatch"} 1.0' in metrics
        assert 'panic_twilio_webhooks_total{kind="sms-frame",result="malformed"} 1.0' in metrics
        assert s.observer.states == {}


async def _plain_metrics(http: aiohttp.ClientSession, s: Scene) -> str:
    ctx = ssl.create_default_context(cafile=str(s.gateway.settings.pki.directory / "root-ca.crt"))
    async with http.get(f"{s.gateway.http_url}/metrics", ssl=ctx) as r:
        return await r.text()


async def test_provider_errors_are_retried_and_an_invalid_number_moves_on(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    steps = step("sms", 600, "responder:ana", "responder:bo") + step("sms", 600, "responder:cy")
    async with scene(steps, behaviours={"bo": Behaviour(invalid=True), "ana": Behaviour(sms="undeliverable")}) as s:
        s.net.fail_next(2, status=503)
        alert_id = await press(s, client_ssl)
        # ana's SMS is refused twice (503), then created once; bo's number is invalid (permanent), ana's is
        # undeliverable: both final, so the step ends at once and cy gets the next one.
        await s.net.wait_for(lambda n: len(s.handsets["cy"].inbox) == 1, WAIT_S)
        assert s.messages_to("ana") == 1 and s.messages_to("bo") == 0
        bo = await Notification.get(incident_id=alert_id, target_key="responder:bo")
        assert bo.status == "failed" and "21211" in (bo.error or "")
        ana = await Notification.get(incident_id=alert_id, target_key="responder:ana")
        assert ana.status == "undelivered" and ana.attempts >= 1
        assert len(s.net.find(EventKind.API_REJECTED, status=503)) == 2


async def test_the_message_cap_stops_runaway_messaging(scene: SceneFactory, client_ssl: ssl.SSLContext) -> None:
    steps = step("sms", 1, "responder:ana", "responder:bo") + step("sms", 1, "responder:cy")
    async with scene(steps, max_messages=2) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "exhausted")
        assert await Notification.filter(incident_id=alert_id).count() == 2
        types = await event_types(alert_id)
        assert types.count("cap-reached") == 1


async def test_retried_status_callbacks_and_a_repeated_keypress_change_nothing_twice(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    async with scene(step("voice", 600, "responder:ana"), behaviours={"ana": Behaviour(call="answer", press="1")}) as s:
        alert_id = await press(s, client_ssl)
        await state_is(s, alert_id, "acknowledged")
        row = await Notification.get(incident_id=alert_id)
        sid = row.provider_sid

        def callbacks_answered(n: PhoneNetwork) -> bool:
            statuses = n.find(EventKind.CALL_STATUS, sid=sid)
            hooks = [e for e in n.find(EventKind.WEBHOOK, sid=sid, purpose="call-status") if e.detail["status"] == 204]
            return any(e.detail["status"] == "completed" for e in statuses) and len(hooks) == len(statuses)

        await s.net.wait_for(callbacks_answered, WAIT_S)  # every real callback is handled before the replays
        public = s.gateway.settings.twilio.public_url
        validator = RequestValidator(AUTH_TOKEN)
        key = row.key.replace(":", "%3A")

        async def post(path: str, form: dict[str, str]) -> int:
            url = f"{public}{path}?key={key}"
            headers = {"X-Twilio-Signature": validator.compute_signature(url, form)}
            async with (  # encoded=True: send the URL exactly as signed (yarl would normalise %3A)
                http_client(client_ssl) as http,
                http.post(URL(url, encoded=True), data=form, headers=headers) as r,
            ):
                return r.status

        before = await event_types(alert_id)
        status = {"CallSid": row.provider_sid or "", "CallStatus": "completed", "AccountSid": "AC" + "5" * 32}
        assert await post("/v1/twilio/voice/status", status) == 204
        assert await post("/v1/twilio/voice/gather", {"CallSid": row.provider_sid or "", "Digits": "1"}) == 200
        assert await event_types(alert_id) == before  # Twilio's retries are no-ops
        assert (await event_types(alert_id)).count("acknowledged") == 1


async def test_replies_to_strangers_cost_nothing_and_a_closed_alert_says_so(
    scene: SceneFactory, client_ssl: ssl.SSLContext
) -> None:
    async with scene(step("sms", 600, "responder:ana")) as s:
        stranger = await s.net.send_sms(from_="+15559990001", to=GATEWAY_NUMBER, body="1234")
        assert stranger.status == 200 and "<Message>" not in stranger.body
        alert_id = await press(s, client_ssl)
        await s.net.wait_for(lambda n: len(s.handsets["ana"].inbox) == 1, WAIT_S)
        await press_cancel(s, client_ssl)
        await state_is(s, alert_id, "cancelled")
        code = s.observer.states[alert_id]["short_code"]
        late = await s.net.send_sms(from_=PEOPLE["ana"][1], to=GATEWAY_NUMBER, body=f"ok {code}")
        assert f"Alert {code} for Ada Lovelace is cancelled: nothing to acknowledge." in late.body
        assert s.observer.states[alert_id]["state"] == "cancelled"
