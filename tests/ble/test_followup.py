"""GATT follow-up on the virtual air: read the signed frame, submit, ack; forged acks; operator ack; walk-away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Final

import pytest
from bleak import BleakClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim.air import PathLossModel, Position, VirtualAir
from firmware_sim.ble_wearable import DISPLAY_OPERATOR, DISPLAY_RECEIVED, BleWearable
from firmware_sim.faults import unregistered_wearable
from gateway.ingest.ble import BumbleClient, BumbleRadio
from gateway.ingest.ble.followup import FollowUpStatus, GattFollowUp
from gateway.protocol import EventType, GpsFix
from gateway.protocol.ack import ACK_SIZE, AckKind, GatewayAck, sign_ack, verify_ack
from gateway.protocol.signature import parse_signed_frame, verify_signature
from gateway.rejection import Rejection
from tests.docvectors import doc_vectors

MODEL: Final = PathLossModel(noise_sigma_db=0.0, range_m=30.0)
STEP_TIMEOUT_S: Final = 5.0
T0_MS: Final = 1_767_225_600_000
GPS: Final = GpsFix(lat=48.8583701, lon=2.2944813, accuracy_m=8, fix_age_s=3)
NAMESPACE: Final = uuid.UUID("6f6b0000-6a0e-4f43-9d0d-2f8f4c3c2a10")


class Gateway:
    """The gateway side of a test: keys, a submit that authenticates against the enrolled key, a radio."""

    def __init__(self, device_key: ec.EllipticCurvePublicKey, radio: BumbleRadio) -> None:
        self.fleet = ec.generate_private_key(ec.SECP256R1())
        self.ack = ec.generate_private_key(ec.SECP256R1())
        self.device_key = device_key
        self.radio = radio
        self.submitted: list[bytes] = []

    async def submit(self, data: bytes) -> str | None:
        signed = parse_signed_frame(data)
        if isinstance(signed, Rejection) or not verify_signature(signed, self.device_key):
            return None
        self.submitted.append(data)
        return str(uuid.uuid5(NAMESPACE, f"{signed.frame.device_id}/{signed.frame.counter}"))

    def client(self, address: str, timeout: float) -> BleakClient:
        return BleakClient(address, backend=BumbleClient, bumble_radio=self.radio, timeout=timeout)

    def follow_up(self, **kwargs: float) -> GattFollowUp:
        return GattFollowUp(self.client, self.submit, self.ack, clock_ms=lambda: T0_MS, **kwargs)  # type: ignore[arg-type]


class Scene:
    def __init__(self, air: VirtualAir, ble: BleWearable, gateway: Gateway) -> None:
        self.air, self.ble, self.gateway = air, ble, gateway

    @property
    def address(self) -> str:
        address = self.ble.address
        assert address is not None
        return address.to_string(with_type_qualifier=False)


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    async with VirtualAir(MODEL, seed=1) as air:
        node = await air.add_node("wearable", Position("hq", 0, 0.0, 0.0), expose=False)
        receiver = await air.add_node("receiver", Position("hq", 0, 3.0, 0.0))
        wearable = unregistered_wearable("w-ble-9", clock=lambda: T0_MS)
        wearable.gps = GPS
        async with BumbleRadio(receiver.transport_spec) as radio:
            gateway = Gateway(wearable.public_key, radio)
            ble = BleWearable(
                wearable,
                gateway.fleet.public_key(),
                gateway.ack.public_key(),
                controller=node.controller,
                heartbeat_interval_ms=200.0,
            )
            async with ble:
                yield Scene(air, ble, gateway)


async def test_follow_up_reads_the_signed_press_and_acks(scene: Scene) -> None:
    frame = await scene.ble.press()
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        result = await scene.gateway.follow_up().follow_up(scene.address, "w-ble-9")
        await scene.ble.wait_until(lambda w: w.display == DISPLAY_RECEIVED)

    assert result.status is FollowUpStatus.ACKED, result
    assert result.counter == frame.counter and result.attempts == 1
    (data,) = scene.gateway.submitted
    signed = parse_signed_frame(data)
    assert not isinstance(signed, Rejection)
    assert verify_signature(signed, scene.ble.wearable.public_key)
    assert signed.frame.counter == frame.counter and signed.frame.event is EventType.PANIC
    assert signed.frame.gps is not None and abs(signed.frame.gps.lat - GPS.lat) < 1e-6
    (ack,) = scene.ble.acks
    assert (ack.kind, ack.counter, ack.incident_id) == (AckKind.RECEIVED, frame.counter, result.incident_id)
    assert not scene.ble.bursting  # acknowledged: the burst ends


async def test_forged_ack_is_refused_and_operator_ack_shows(scene: Scene) -> None:
    frame = await scene.ble.press()
    forger = ec.generate_private_key(ec.SECP256R1())
    incident = str(uuid.uuid4())
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        forged = GattFollowUp(scene.gateway.client, scene.gateway.submit, forger, max_attempts=1)
        result = await forged.follow_up(scene.address, "w-ble-9")
    assert result.status is FollowUpStatus.READ, result  # frame accepted, ack refused (ATT error)
    assert "0xFC" in result.detail or "252" in result.detail or "WRITE_REQUEST_REJECTED" in result.detail.upper()
    assert scene.ble.refused_acks == 1 and scene.ble.display == "" and scene.ble.acks == []

    follow_up = scene.gateway.follow_up()
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        assert await follow_up.acknowledge_operator("w-ble-9", incident, frame.counter) is None  # queued only
        result = await follow_up.follow_up(scene.address, "w-ble-9")  # the next contact delivers it
        await scene.ble.wait_until(lambda w: w.display == DISPLAY_OPERATOR)
    assert result.status is FollowUpStatus.ACKED and result.operator_acks == 1
    assert follow_up.pending_operator_acks("w-ble-9") == ()
    assert [a.kind for a in scene.ble.acks] == [AckKind.RECEIVED, AckKind.OPERATOR]

    # Later, a direct operator contact for the same press: accepted, the display stays.
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        direct = await follow_up.acknowledge_operator("w-ble-9", incident, frame.counter, address=scene.address)
    assert direct is not None and direct.status is FollowUpStatus.OPERATOR_ACKED
    assert scene.ble.display == DISPLAY_OPERATOR


async def test_wearable_leaving_mid_follow_up_is_unreachable_in_bounded_time(scene: Scene) -> None:
    await scene.ble.press()
    gateway = scene.gateway
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_submit(data: bytes) -> str | None:
        entered.set()
        await release.wait()
        return await gateway.submit(data)

    follow_up = GattFollowUp(gateway.client, slow_submit, gateway.ack, deadline_s=4.0, connect_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(follow_up.follow_up(scene.address, "w-ble-9"))
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await entered.wait()  # connected, frame read: now the wearable walks away
    await scene.air.remove_node("wearable")
    release.set()
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        result = await task
    assert result.status is FollowUpStatus.READ  # submitted, but the ack could not be written
    assert scene.ble.display == ""

    # A fresh follow-up to a wearable gone from the air: unreachable, bounded, no exception.
    started = loop.time()
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        gone = await GattFollowUp(
            gateway.client, gateway.submit, gateway.ack, deadline_s=3.0, connect_timeout_s=0.5
        ).follow_up(scene.address, "w-ble-9")
    assert gone.status is FollowUpStatus.UNREACHABLE and gone.attempts >= 2
    assert loop.time() - started < 3.0 + 3.0  # deadline plus one connect-cancel grace


async def test_a_follow_up_goes_to_the_address_the_wearable_advertises_from_now(scene: Scene) -> None:
    """A press at an advert-window change: the address it was heard at is gone; the device's latest one is used."""
    await scene.ble.press()
    follow_up = scene.gateway.follow_up(deadline_s=6.0, connect_timeout_s=0.5)
    follow_up.note_address("w-ble-9", scene.address)  # what the receivers hear from it now
    async with asyncio.timeout(STEP_TIMEOUT_S * 2):
        result = await follow_up.follow_up("0C:00:00:00:00:01", "w-ble-9")  # the address of the old window
        await scene.ble.wait_until(lambda w: w.display == DISPLAY_RECEIVED)
    assert result.status is FollowUpStatus.ACKED, result


def test_ack_vector_of_the_protocol_document() -> None:
    vectors = doc_vectors("ack-vector")
    assert vectors, "docs/PROTOCOL.md §15 has no ack-vector"
    fields = vectors[0]
    key = ec.derive_private_key(int(fields["ack_key_scalar"], 16), ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert public.hex() == fields["ack_public"]
    data = bytes.fromhex(fields["ack"])
    assert len(data) == ACK_SIZE
    expected = GatewayAck(
        AckKind[fields["kind"].upper()], int(fields["counter"]), fields["incident_id"], int(fields["timestamp_ms"])
    )
    assert verify_ack(data, key.public_key()) == expected
    assert data[:30] == sign_ack(expected, key)[:30]  # the body is deterministic; ECDSA's signature is not
    assert isinstance(verify_ack(data, ec.generate_private_key(ec.SECP256R1()).public_key()), Rejection)
