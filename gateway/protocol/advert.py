"""BLE advert v1: the short, private, MAC-protected alert a wearable broadcasts (sans-I/O; docs/PROTOCOL.md §14).

An advert is one legacy (31-byte) advertising payload: a Flags AD and a Service Data AD holding

    version (1) | ephemeral id (8) | sealed counter, event, battery (6) | tag (8)

under three keys derived per device by ECDH between the device key and the gateway's fleet key. The
sealing is SIV-style: the tag is a truncated HMAC over the plaintext and also the encryption's IV, so
no two adverts (different counters or windows) share a keystream, and every byte but the version looks
random to anyone without the device's keys.

Device side: `device_advert_keys`, `encode_advert`. Gateway side: `gateway_advert_keys`, `parse_advert`
(cheap; foreign adverts come back as None), then `open_advert` with the keys the ephemeral id resolved
to (`gateway.core.ephemeral.EphemeralIdTable`). Bad input is a Rejection, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.protocol.frame import EventType
from gateway.rejection import Rejection, RejectReason

# The constants live here rather than in const.py: they belong to the advert alone, and §14 quotes them.

#: First payload byte; the only byte of an advert that is the same for every device and window.
ADVERT_VERSION: Final = 1

#: 16-bit Service Data UUID of our adverts. PLACEHOLDER, to be registered with the Bluetooth SIG (members'
#: 16-bit UUIDs are 0xFCxx-0xFExx): a deployment must use an assigned one (parse_advert takes it as argument).
ADVERT_SERVICE_UUID: Final = 0xFD00

#: Ephemeral-id rotation period. 15 minutes, like the rotating ids of exposure-notification and
#: find-my beacons: short enough that a stranger's scanner loses the wearer, long enough that a gateway
#: precomputes few ids per device and tolerates a device clock off by up to one window.
ADVERT_WINDOW_S: Final = 900

#: A legacy advertising PDU carries at most 31 bytes of AD structures (Core spec Vol 3 Part C §11).
LEGACY_ADV_DATA_MAX: Final = 31
#: Largest advertising data a BLE 5 extended advert can carry; anything longer is not an advert.
MAX_ADV_DATA: Final = 1650

#: AD types (Bluetooth Assigned Numbers): Flags, and Service Data with a 16-bit UUID.
AD_TYPE_FLAGS: Final = 0x01
AD_TYPE_SERVICE_DATA_16: Final = 0x16
#: LE General Discoverable, BR/EDR not supported: the gateway connects over GATT after the advert.
AD_FLAGS_VALUE: Final = 0x06

EID_SIZE: Final = 8
#: counter u32 | event u8 | battery u8, encrypted.
SEALED_SIZE: Final = 6
#: Truncated HMAC-SHA256: 2^-64 forgery odds per attempt, and each attempt costs an attacker a broadcast.
TAG_SIZE: Final = 8
PAYLOAD_SIZE: Final = 1 + EID_SIZE + SEALED_SIZE + TAG_SIZE
#: Flags AD (3) + Service Data AD header (length, type, UUID: 4) + payload.
ADVERT_SIZE: Final = 3 + 4 + PAYLOAD_SIZE

#: HKDF salt and info prefix (info = prefix || device id): keys for another purpose or device never coincide.
KEY_SALT: Final = b"panic-advert/v1"
KEY_INFO_PREFIX: Final = b"keys"
#: Prefix of the block whose encryption under K_eid gives the ephemeral id.
EID_BLOCK_PREFIX: Final = b"EID"

BATTERY_UNKNOWN: Final = 0xFF

_DEVICE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,32}")
_U32_MAX: Final = 0xFFFFFFFF
#: What every advert of ours contains: the Service Data AD type then the UUID, little-endian.
_MARKER_DEFAULT: Final = bytes((AD_TYPE_SERVICE_DATA_16,)) + ADVERT_SERVICE_UUID.to_bytes(2, "little")
_EVENTS: Final = {int(e): e for e in EventType}
_BLOCK_PAD: Final = bytes(16 - len(EID_BLOCK_PREFIX) - 4)
_IV_PAD: Final = bytes(4)
_VERSION_BYTE: Final = bytes((ADVERT_VERSION,))


def _ecb(key: bytes) -> Any:
    """A reusable AES-128-ECB encryptor (single blocks only; not thread-safe)."""
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - single-block PRF, not bulk ECB


@dataclass(frozen=True, slots=True)
class AdvertKeys:
    """One device's advert keys, with the cipher and MAC states precomputed for the hot path.

    device_id: the device the keys belong to (its certificate CN; bound into the derivation).
    eid_key: K_eid, AES-128 key of the ephemeral ids.
    enc_key: K_enc, AES-128 key of the sealed fields.
    mac_key: K_mac, HMAC-SHA256 key of the tag.

    The precomputed states are not thread-safe: use one AdvertKeys from one thread (the sans-I/O core).
    """

    device_id: str
    eid_key: bytes = field(repr=False)
    enc_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)
    _eid_ecb: Any = field(init=False, repr=False, compare=False)
    _enc_ecb: Any = field(init=False, repr=False, compare=False)
    _mac: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _DEVICE_ID.fullmatch(self.device_id):
            raise ValueError(f"device id {self.device_id!r} is not 1-32 chars of [A-Za-z0-9._-]")
        if not len(self.eid_key) == len(self.enc_key) == len(self.mac_key) == 16:
            raise ValueError("advert keys are 16 bytes each")
        object.__setattr__(self, "_eid_ecb", _ecb(self.eid_key))
        object.__setattr__(self, "_enc_ecb", _ecb(self.enc_key))
        object.__setattr__(self, "_mac", hmac.new(self.mac_key, digestmod=hashlib.sha256))

    def ephemeral_id(self, window: int) -> bytes:
        """EID of `window`: AES-128(K_eid, "EID" || window u32 || 9 zero bytes)[:8]."""
        block = EID_BLOCK_PREFIX + window.to_bytes(4, "big") + _BLOCK_PAD
        eid: bytes = self._eid_ecb.update(block)[:EID_SIZE]
        return eid

    def _tag(self, eid: bytes, window_bytes: bytes, plaintext: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(_VERSION_BYTE + eid + window_bytes + plaintext)
        tag: bytes = mac.digest()[:TAG_SIZE]
        return tag

    def _keystream(self, tag: bytes, window_bytes: bytes) -> int:
        block: bytes = self._enc_ecb.update(tag + window_bytes + _IV_PAD)
        return int.from_bytes(block[:SEALED_SIZE], "big")


class ParsedAdvert(NamedTuple):
    """Our advert's payload, split but not yet authenticated."""

    #: Ephemeral id: which device and window it is, for whoever holds the table.
    eid: bytes
    #: counter, event and battery, encrypted.
    sealed: bytes
    #: Truncated HMAC over the plaintext; also the IV of the encryption.
    tag: bytes


class AdvertSignal(NamedTuple):
    """An authenticated, decrypted advert."""

    #: Device the ephemeral id resolved to (and whose keys authenticated it).
    device_id: str
    #: The device's message counter: goes through the device's replay window like a frame's.
    counter: int
    #: What happened.
    event: EventType
    #: Percent 0..100, or None when the device does not know.
    battery: int | None
    #: The time window the device built the advert for (floor(unix seconds / 900)).
    window: int


def window_of(unix_seconds: float) -> int:
    """The advert window that contains a Unix time (seconds); the caller reads the clock."""
    return int(unix_seconds // ADVERT_WINDOW_S)


def derive_advert_keys(shared_secret: bytes, device_id: str) -> AdvertKeys:
    """K_eid | K_enc | K_mac = HKDF-SHA256(Z, salt "panic-advert/v1", info "keys" || device id, 48 bytes)."""
    if len(shared_secret) != 32:
        raise ValueError("the shared secret is the 32-byte P-256 ECDH x-coordinate")
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"device id {device_id!r} is not 1-32 chars of [A-Za-z0-9._-]")
    okm = HKDF(
        algorithm=hashes.SHA256(), length=48, salt=KEY_SALT, info=KEY_INFO_PREFIX + device_id.encode("ascii")
    ).derive(shared_secret)
    return AdvertKeys(device_id, okm[:16], okm[16:32], okm[32:])


def _check_curve(*keys: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    for key in keys:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"advert keys need P-256 keys, not {key.curve.name}")


def device_advert_keys(
    device_private_key: ec.EllipticCurvePrivateKey, fleet_public_key: ec.EllipticCurvePublicKey, device_id: str
) -> AdvertKeys:
    """The wearable's side: Z = ECDH(device key, fleet public key)."""
    _check_curve(device_private_key, fleet_public_key)
    return derive_advert_keys(device_private_key.exchange(ec.ECDH(), fleet_public_key), device_id)


def gateway_advert_keys(
    fleet_private_key: ec.EllipticCurvePrivateKey, device_public_key: ec.EllipticCurvePublicKey, device_id: str
) -> AdvertKeys:
    """The gateway's side: Z = ECDH(fleet key, the device certificate's public key); equal to the device's."""
    _check_curve(fleet_private_key, device_public_key)
    return derive_advert_keys(fleet_private_key.exchange(ec.ECDH(), device_public_key), device_id)


def encode_advert(keys: AdvertKeys, counter: int, event: EventType, battery: int | None, window: int) -> bytes:
    """The whole advertising data (Flags AD + Service Data AD, 30 bytes); ValueError for unencodable values."""
    if not 0 <= counter <= _U32_MAX:
        raise ValueError("counter out of u32 range")
    if not 0 <= window <= _U32_MAX:
        raise ValueError("window out of u32 range")
    battery_raw = BATTERY_UNKNOWN if battery is None else battery
    if not 0 <= battery_raw <= 100 and battery_raw != BATTERY_UNKNOWN:
        raise ValueError("battery must be 0..100 or None")
    event = EventType(event)
    plaintext = counter.to_bytes(4, "big") + bytes((int(event), battery_raw))
    window_bytes = window.to_bytes(4, "big")
    eid = keys.ephemeral_id(window)
    tag = keys._tag(eid, window_bytes, plaintext)
    sealed = (int.from_bytes(plaintext, "big") ^ keys._keystream(tag, window_bytes)).to_bytes(SEALED_SIZE, "big")
    return (
        bytes((2, AD_TYPE_FLAGS, AD_FLAGS_VALUE, 3 + PAYLOAD_SIZE))
        + _MARKER_DEFAULT
        + _VERSION_BYTE
        + eid
        + sealed
        + tag
    )


def _malformed(detail: str) -> Rejection:
    return Rejection(RejectReason.MALFORMED, detail)


def parse_advert(data: bytes, service_uuid: int = ADVERT_SERVICE_UUID) -> ParsedAdvert | Rejection | None:
    """Find our Service Data AD in advertising data. Never raises.

    None: not ours (no Service Data AD with our UUID; decided by one substring search when the bytes
    `16 <uuid LE>` do not occur at all, so foreign adverts cost almost nothing). Rejection: ours but
    malformed (AD structures that overrun, two of our ADs, wrong payload size) or another version.
    """
    marker = (
        _MARKER_DEFAULT
        if service_uuid == ADVERT_SERVICE_UUID
        else bytes((AD_TYPE_SERVICE_DATA_16,)) + service_uuid.to_bytes(2, "little")
    )
    if marker not in data:
        return None
    size = len(data)
    if size > MAX_ADV_DATA:
        return _malformed(f"advertising data is {size} bytes, more than {MAX_ADV_DATA}")
    start = end = -1
    pos = 0
    while pos < size:
        length = data[pos]
        if length == 0:  # early termination: the rest is padding (Core spec Vol 3 Part C §11)
            break
        next_pos = pos + 1 + length
        if next_pos > size:
            return _malformed(f"AD structure at byte {pos} runs past the end of the data")
        if length >= 3 and data[pos + 1 : pos + 4] == marker:
            if start >= 0:
                return _malformed("two service data structures with our UUID")
            start, end = pos + 4, next_pos
        pos = next_pos
    if start < 0:
        return None
    if start == end:
        return _malformed("our service data is empty")
    if data[start] != ADVERT_VERSION:
        return Rejection(RejectReason.UNSUPPORTED_VERSION, f"advert version {data[start]} is not supported")
    if end - start != PAYLOAD_SIZE:
        return _malformed(f"advert payload is {end - start} bytes, expected {PAYLOAD_SIZE}")
    eid_end = start + 1 + EID_SIZE
    sealed_end = eid_end + SEALED_SIZE
    return ParsedAdvert(bytes(data[start + 1 : eid_end]), bytes(data[eid_end:sealed_end]), bytes(data[sealed_end:end]))


def open_advert(parsed: ParsedAdvert, keys: AdvertKeys, window: int) -> AdvertSignal | Rejection:
    """Decrypt and authenticate with the keys and window the ephemeral id resolved to. Never raises."""
    eid, sealed, tag = parsed
    if len(eid) != EID_SIZE or len(sealed) != SEALED_SIZE or len(tag) != TAG_SIZE or not 0 <= window <= _U32_MAX:
        return _malformed("advert fields have the wrong sizes")
    window_bytes = window.to_bytes(4, "big")
    plain = int.from_bytes(sealed, "big") ^ keys._keystream(tag, window_bytes)
    plaintext = plain.to_bytes(SEALED_SIZE, "big")
    if not hmac.compare_digest(keys._tag(eid, window_bytes, plaintext), tag):
        return Rejection(RejectReason.BAD_SIGNATURE, "advert tag does not verify")
    event = _EVENTS.get(plaintext[4])
    if event is None:
        return _malformed(f"unknown event type 0x{plaintext[4]:02x}")
    battery = plaintext[5]
    if battery > 100 and battery != BATTERY_UNKNOWN:
        return _malformed(f"battery {battery} is not 0..100 or 255")
    return AdvertSignal(keys.device_id, plain >> 16, event, None if battery == BATTERY_UNKNOWN else battery, window)
