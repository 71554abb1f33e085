"""Gateway-signed acknowledgements: round trip, forgery, garbage."""

from __future__ import annotations

import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.ack import ACK_SIZE, AckKind, GatewayAck, sign_ack, verify_ack
from gateway.rejection import Rejection, RejectReason

GATEWAY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def test_round_trip_and_size() -> None:
    ack = GatewayAck(AckKind.OPERATOR, 42, str(uuid.uuid4()), 1_763_000_000_000)
    data = sign_ack(ack, GATEWAY)
    assert len(data) == ACK_SIZE
    assert verify_ack(data, GATEWAY.public_key()) == ack


def test_another_key_or_a_flipped_bit_is_refused() -> None:
    data = sign_ack(GatewayAck(AckKind.RECEIVED, 1, str(uuid.uuid4()), 1), GATEWAY)
    result = verify_ack(data, OTHER.public_key())
    assert isinstance(result, Rejection) and result.reason is RejectReason.BAD_SIGNATURE
    for i in (1, 5, 20, 29, 40):
        bad = bytearray(data)
        bad[i] ^= 1
        assert isinstance(verify_ack(bytes(bad), GATEWAY.public_key()), Rejection)


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    assert isinstance(verify_ack(data, GATEWAY.public_key()), Rejection)
