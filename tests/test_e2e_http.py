"""End to end over HTTPS: a press reaches the command center; every bad input gets its precise refusal."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

from gateway.protocol import EventType, GpsFix
from tests.conftest import GatewayFactory, enroll, http_client, observe, post_frame


async def test_panic_press_reaches_command_center_and_ack_comes_back(
    gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, observe(gw.settings.mqtt.topic_prefix) as cc, http_client(client_ssl) as http:
        wearable = await enroll(pki, wearer="Grace Hopper", site="plant-north")
        status, body, _ = await post_frame(http, gw, wearable.frame(gps=GpsFix(52.52, 13.405, 8, 2)))
        assert status == 202, body
        assert body["status"] == "accepted" and body["event"] == "panic" and body["delayed"] is False
        alert_id = body["incident_id"]

        await cc.wait_for(lambda o: alert_id in o.states)
        state = cc.states[alert_id]
        assert state["state"] == "raised"
        assert state["device"] == {"id": wearable.device_id, "wearer": "Grace Hopper", "site": "plant-north"}
        assert state["location"]["geometry"]["coordinates"] == [13.405, 52.52]
        assert state["location"]["properties"]["accuracy_m"] == 8
        await cc.wait_for(lambda o: any(e["alert_id"] == alert_id and e["type"] == "raised" for e in o.events))

        await cc.ack(alert_id, operator="op-7")
        await cc.wait_for(lambda o: o.states[alert_id]["state"] == "acknowledged")
        assert cc.states[alert_id]["acknowledged_by"] == "op-7"
        assert cc.states[alert_id]["revision"] == 2


async def test_retry_is_idempotent_and_replay_is_refused(
    gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, observe(gw.settings.mqtt.topic_prefix) as cc, http_client(client_ssl) as http:
        w = await enroll(pki)
        first = w.frame(counter=10)
        status, body, _ = await post_frame(http, gw, first)
        assert status == 202
        alert_id = body["incident_id"]
        await cc.wait_for(lambda o: o.state_messages.get(alert_id, 0) == 1)
        again, body2, _ = await post_frame(http, gw, first)
        assert (again, body2["status"], body2["incident_id"]) == (202, "duplicate", alert_id)
        # The retry makes sure the command center has the press, in case the first publish was lost.
        await cc.wait_for(lambda o: o.state_messages.get(alert_id, 0) == 2)
        assert len(cc.states) == 1, "a retry never creates a second alert"
        # Same counter, different content: a replay.
        status, problem, _ = await post_frame(http, gw, w.frame(EventType.TEST, counter=10))
        assert status == 409 and problem["reason"] == "replayed"
        # Out of order inside the window is fine; far behind it is not.
        assert (await post_frame(http, gw, w.frame(counter=8)))[0] == 202
        assert (await post_frame(http, gw, w.frame(counter=200)))[0] == 202
        status, problem, _ = await post_frame(http, gw, w.frame(counter=9))
        assert status == 409 and "behind the replay window" in problem["detail"]


async def test_late_panic_alerts_marked_delayed_and_future_clock_is_refused(
    gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        status, body, _ = await post_frame(http, gw, w.frame(ts_ms=now_ms - 3_600_000))
        assert status == 202 and body["delayed"] is True
        status, problem, _ = await post_frame(http, gw, w.frame(ts_ms=now_ms + 3_600_000))
        assert status == 422 and problem["reason"] == "clock-skew"


async def test_bad_inputs_get_precise_problems(
    gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext
) -> None:
    async with gateway_factory() as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        good = w.frame()
        cases = [
            (good, "text/plain", 415, "unsupported-media-type"),
            (b"\x00" * 4000, None, 413, "oversized"),
            (b"garbage", None, 400, "malformed"),
            (good[:-1] + bytes([good[-1] ^ 1]), None, 401, "bad-signature"),
            (b"\x07" + good[1:], None, 400, "unsupported-version"),
        ]
        for body, ctype, want_status, want_reason in cases:
            status, problem, headers = await post_frame(http, gw, body, *(ctype,) if ctype else ())
            assert (status, problem["reason"]) == (want_status, want_reason), problem
            assert headers["Content-Type"].startswith("application/problem+json")
            assert problem["status"] == want_status and problem["detail"]

        stranger = await enroll(pki)
        from gateway.store.models import Device

        await Device.filter(device_id=stranger.device_id).delete()
        status, problem, _ = await post_frame(http, gw, stranger.frame())
        assert (status, problem["reason"]) == (403, "unknown-device")

        metrics = await (await http.get(f"{gw.http_url}/metrics")).text()
        assert 'panic_signals_rejected_total{reason="bad-signature",transport="https"} 1.0' in metrics
        assert (await http.get(f"{gw.http_url}/healthz")).status == 200


async def test_revoked_device_is_refused(gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext) -> None:
    from gateway.identity.trust import load_device_trust
    from gateway.store.registry import DeviceRegistry

    async with gateway_factory() as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        assert (await post_frame(http, gw, w.frame()))[0] == 202
        await DeviceRegistry(load_device_trust(pki)).revoke(w.device_id, "lost", datetime.now(UTC))
        status, problem, _ = await post_frame(http, gw, w.frame())
        assert (status, problem["reason"]) == (403, "revoked")


async def test_heartbeats_are_rate_limited_per_device_but_panics_are_not(
    gateway_factory: GatewayFactory, pki, client_ssl: ssl.SSLContext
) -> None:
    from gateway.config import HttpSettings

    http_settings = HttpSettings(
        port=0, tls_cert=pki.server_cert, tls_key=pki.server_key, device_burst=3, device_rate_per_s=0.1
    )
    async with gateway_factory(http=http_settings) as gw, http_client(client_ssl) as http:
        w = await enroll(pki)
        statuses = [(await post_frame(http, gw, w.frame(EventType.HEARTBEAT)))[0] for _ in range(5)]
        assert statuses[:3] == [202, 202, 202] and statuses[3] == 429
        status, problem, headers = await post_frame(http, gw, w.frame(EventType.HEARTBEAT))
        assert status == 429 and int(headers["Retry-After"]) >= 1 and problem["reason"] == "rate-limited"
        assert (await post_frame(http, gw, w.frame(EventType.PANIC)))[0] == 202
