"""Correlation in the store: one press heard by several receivers, gateways and transports is one incident."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.core.authenticate import (
    AuthenticatedSignal,
    DeviceCredentials,
    authenticate_advert,
)
from gateway.identity.pki import PkiLayout
from gateway.identity.trust import load_device_trust
from gateway.protocol import EventType
from gateway.protocol.advert import AdvertSignal
from gateway.rejection import RejectReason
from gateway.store.db import open_database
from gateway.store.incidents import IncidentStore, Outcome, incident_id_for
from gateway.store.models import Device, Incident, Observation
from gateway.store.registry import DeviceDirectory
from tests.conftest import authenticated_frame, enroll


def advert(creds: DeviceCredentials, counter: int, event: EventType, receiver: str, rssi: int) -> AuthenticatedSignal:
    opened = AdvertSignal(creds.device_id, counter, event, 55, 1)
    result = authenticate_advert(opened, creds, receiver=receiver, rssi=rssi, now=datetime.now(UTC))
    assert isinstance(result, AuthenticatedSignal)
    return result


async def test_one_press_over_receivers_gateways_and_transports_is_one_incident(pki: PkiLayout, db_url: str) -> None:
    async with open_database(db_url):
        w = await enroll(pki)
        creds = await DeviceDirectory(load_device_trust(pki)).get(w.device_id, datetime.now(UTC))
        assert creds is not None
        one = IncidentStore(gateway_id="gw-1", replay_window=63, outbox_lease=timedelta(seconds=30))
        two = IncidentStore(gateway_id="gw-2", replay_window=63, outbox_lease=timedelta(seconds=30))
        press = incident_id_for(w.device_id, 3)

        # Two receivers of one gateway in one batch, a third receiver on another gateway, then HTTPS.
        first = await one.commit_signals(
            [advert(creds, 3, EventType.PANIC, "far", -80), advert(creds, 3, EventType.PANIC, "near", -50)]
        )
        assert [(o.outcome, o.incident_id) for o in first] == [(Outcome.ACCEPTED, press), (Outcome.DUPLICATE, press)]
        assert len(first[0].outbox) == 2 and first[1].outbox == ()  # one state and one event, not two of each
        (other,) = await two.commit_signals([advert(creds, 3, EventType.PANIC, "stairs", -70)])
        assert (other.outcome, other.incident_id, other.outbox) == (Outcome.DUPLICATE, press, ())
        (https,) = await one.commit_signals([authenticated_frame(w, creds, EventType.PANIC, counter=3)])
        assert (https.outcome, https.incident_id) == (Outcome.DUPLICATE, press)

        # The same counter with another event is a replay, over either transport.
        (forged,) = await two.commit_signals([advert(creds, 3, EventType.CANCEL, "near", -50)])
        assert forged.rejection is not None and forged.rejection.reason is RejectReason.REPLAYED
        (cancel,) = await one.commit_signals([authenticated_frame(w, creds, EventType.CANCEL, counter=3)])
        assert cancel.rejection is not None and cancel.rejection.reason is RejectReason.REPLAYED

        # A frame first, then adverts of the same press: the same incident again.
        (raised,) = await one.commit_signals([authenticated_frame(w, creds, EventType.FALL, counter=4)])
        (heard,) = await two.commit_signals([advert(creds, 4, EventType.FALL, "lobby", -60)])
        assert (raised.outcome, heard.outcome) == (Outcome.ACCEPTED, Outcome.DUPLICATE)
        assert heard.incident_id == raised.incident_id == incident_id_for(w.device_id, 4)

        assert await Incident.all().count() == 2
        rows = await Observation.filter(incident_id=press).order_by("id")
        assert [(o.receiver, o.rssi, o.gateway_id, o.transport) for o in rows] == [
            ("far", -80, "gw-1", "ble"),
            ("near", -50, "gw-1", "ble"),
            ("stairs", -70, "gw-2", "ble"),
            (None, None, "gw-1", "https"),
        ]
        device = await Device.get(device_id=w.device_id)
        assert (device.nearest_receiver, device.nearest_rssi, device.nearest_counter) == ("lobby", -60, 4)
