"""Alert frame v1: the binary record a wearable signs, for every transport (sans-I/O)."""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Final

from gateway.location.model import CellObservation
from gateway.protocol import const
from gateway.rejection import Rejection, RejectReason

_HEADER: Final = struct.Struct(">BBBBIqB")
_GPS: Final = struct.Struct(">iiHH")
#: radio, flags, mcc, mnc, area, cell id (u40 as its high byte and low u32), signal.
_CELL: Final = struct.Struct(">BBHHIBIb")
_RADIO_CODES: Final = {name: code for code, name in const.CELL_RADIOS.items()}
_DEVICE_ID: Final = re.compile(rb"[A-Za-z0-9._-]{1,32}")


class EventType(enum.IntEnum):
    """What the wearer (or the device) is signalling."""

    PANIC = 0x01
    CANCEL = 0x02
    HEARTBEAT = 0x03
    TEST = 0x04
    FALL = 0x05
    LOW_BATTERY = 0x06

    @property
    def raises_incident(self) -> bool:
        """True for events that open an incident an operator must handle."""
        return self in (EventType.PANIC, EventType.FALL, EventType.TEST)


class Flags(enum.IntFlag):
    """Frame flags; bits not listed here must be zero in v1."""

    NONE = 0
    #: The device sent this frame before and got no answer: it is retrying.
    RETRANSMISSION = 0x01
    #: The wearer chose a silent alarm: no buzzer or light on the wearable.
    SILENT = 0x02


_KNOWN_FLAGS: Final = int(Flags.RETRANSMISSION | Flags.SILENT)


@dataclass(frozen=True, slots=True)
class GpsFix:
    """A GNSS position carried in the frame.

    lat, lon: WGS 84 degrees (7 decimals on the wire).
    accuracy_m: horizontal accuracy radius in metres (65535 = 65535 or worse).
    fix_age_s: how many seconds before the frame's timestamp the fix was taken.
    """

    lat: float
    lon: float
    accuracy_m: int
    fix_age_s: int = 0


@dataclass(frozen=True, slots=True)
class AlertFrame:
    """One decoded v1 frame.

    device_id: the device's certificate CN.
    counter: strictly increasing per device, never reused (replay protection).
    timestamp_ms: device clock, milliseconds since the Unix epoch (UTC).
    event: what happened.
    flags: see Flags.
    battery: percent 0..100, or None when unknown.
    gps: optional position.
    cells: the cells the modem sees, serving cell first (empty: no cells extension).
    """

    device_id: str
    counter: int
    timestamp_ms: int
    event: EventType
    flags: Flags = Flags.NONE
    battery: int | None = None
    gps: GpsFix | None = None
    cells: tuple[CellObservation, ...] = ()


def encode_frame(frame: AlertFrame) -> bytes:
    """Serialise a frame; raises ValueError for values the wire cannot carry (a programming error)."""
    device_id = frame.device_id.encode("ascii")
    if not _DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"device id {frame.device_id!r} is not 1-32 chars of [A-Za-z0-9._-]")
    if not 0 <= frame.counter <= 0xFFFFFFFF:
        raise ValueError("counter out of u32 range")
    battery = const.BATTERY_UNKNOWN if frame.battery is None else frame.battery
    if not 0 <= battery <= 100 and battery != const.BATTERY_UNKNOWN:
        raise ValueError("battery must be 0..100 or None")
    out = bytearray(
        _HEADER.pack(
            const.FRAME_VERSION,
            int(frame.event),
            int(frame.flags),
            battery,
            frame.counter,
            frame.timestamp_ms,
            len(device_id),
        )
    )
    out += device_id
    if frame.gps is not None:
        g = frame.gps
        lat = round(g.lat * const.GPS_SCALE)
        lon = round(g.lon * const.GPS_SCALE)
        if not (-90 * const.GPS_SCALE <= lat <= 90 * const.GPS_SCALE):
            raise ValueError("latitude out of range")
        if not (-180 * const.GPS_SCALE <= lon <= 180 * const.GPS_SCALE):
            raise ValueError("longitude out of range")
        out += bytes((const.TLV_GPS, const.GPS_TLV_SIZE))
        out += _GPS.pack(lat, lon, min(g.accuracy_m, 0xFFFF), min(g.fix_age_s, 0xFFFF))
    if frame.cells:
        out += _encode_cells(frame.cells)
    return bytes(out)


def _encode_cells(cells: tuple[CellObservation, ...]) -> bytes:
    if len(cells) > const.MAX_CELLS:
        raise ValueError(f"{len(cells)} cells, at most {const.MAX_CELLS} fit the cells extension")
    out = bytearray((const.TLV_CELLS, const.CELL_SIZE * len(cells)))
    for index, cell in enumerate(cells):
        code = _RADIO_CODES.get(cell.radio)
        if code is None:
            raise ValueError(f"radio {cell.radio!r} is not one of {sorted(_RADIO_CODES)}")
        if cell.serving and index > 0:
            raise ValueError("only the first cell may be the serving cell")
        problem = _cell_range_problem(cell.radio, cell.mcc, cell.mnc, cell.area, cell.cell)
        if problem is not None:
            raise ValueError(problem)
        if cell.signal_dbm is None:
            signal = const.CELL_SIGNAL_UNKNOWN
        elif cell.signal_dbm > 0:
            raise ValueError(f"signal {cell.signal_dbm} dBm is positive")
        else:
            signal = max(cell.signal_dbm, const.CELL_SIGNAL_MIN_DBM)
        flags = const.CELL_FLAG_SERVING if cell.serving else 0
        out += _CELL.pack(code, flags, cell.mcc, cell.mnc, cell.area, cell.cell >> 32, cell.cell & 0xFFFFFFFF, signal)
    return bytes(out)


def _cell_range_problem(radio: str, mcc: int, mnc: int, area: int, cell: int) -> str | None:
    if not 0 <= mcc <= const.MAX_MCC:
        return f"mcc {mcc} is not 0..{const.MAX_MCC}"
    if not 0 <= mnc <= const.MAX_MNC:
        return f"mnc {mnc} is not 0..{const.MAX_MNC}"
    if not 0 <= area <= const.CELL_AREA_MAX[radio]:
        return f"{radio} area code {area} is not 0..{const.CELL_AREA_MAX[radio]}"
    if not 0 <= cell <= const.CELL_ID_MAX[radio]:
        return f"{radio} cell id {cell} is not 0..{const.CELL_ID_MAX[radio]}"
    return None


def _decode_cells(value: bytes) -> tuple[CellObservation, ...] | Rejection:
    if not value or len(value) % const.CELL_SIZE:
        return _malformed(
            f"cells extension is {len(value)} bytes, not 1 to {const.MAX_CELLS} {const.CELL_SIZE}-byte cells"
        )
    if len(value) > const.MAX_CELLS * const.CELL_SIZE:
        return _malformed(f"cells extension holds {len(value) // const.CELL_SIZE} cells, more than {const.MAX_CELLS}")
    cells = []
    for index, (code, flags, mcc, mnc, area, cell_high, cell_low, signal) in enumerate(_CELL.iter_unpack(value)):
        number = index + 1
        radio = const.CELL_RADIOS.get(code)
        if radio is None:
            return _malformed(f"cell {number}: unknown radio 0x{code:02x}")
        if flags & ~const.CELL_FLAG_SERVING:
            return _malformed(f"cell {number}: reserved flag bits set: 0x{flags:02x}")
        serving = bool(flags & const.CELL_FLAG_SERVING)
        if serving and index > 0:
            return _malformed(f"cell {number}: only the first cell may be the serving cell")
        cell_id = cell_high << 32 | cell_low
        problem = _cell_range_problem(radio, mcc, mnc, area, cell_id)
        if problem is not None:
            return _malformed(f"cell {number}: {problem}")
        if signal > 0:
            return _malformed(f"cell {number}: signal {signal} dBm is positive")
        signal_dbm = None if signal == const.CELL_SIGNAL_UNKNOWN else signal
        cells.append(CellObservation(radio, mcc, mnc, area, cell_id, signal_dbm, serving))
    return tuple(cells)


def _malformed(detail: str) -> Rejection:
    return Rejection(RejectReason.MALFORMED, detail)


def decode_frame(data: bytes) -> AlertFrame | Rejection:
    """Parse a frame. Never raises: any bad input comes back as a Rejection."""
    if len(data) < const.HEADER_SIZE:
        return _malformed(f"frame is {len(data)} bytes, shorter than the {const.HEADER_SIZE}-byte header")
    if data[0] != const.FRAME_VERSION:
        return Rejection(RejectReason.UNSUPPORTED_VERSION, f"frame version {data[0]} is not supported (expected 1)")
    if len(data) > const.MAX_FRAME_SIZE:
        return _malformed(f"frame is {len(data)} bytes, more than {const.MAX_FRAME_SIZE}")
    _, event_raw, flags_raw, battery_raw, counter, timestamp_ms, id_len = _HEADER.unpack_from(data)
    try:
        event = EventType(event_raw)
    except ValueError:
        return _malformed(f"unknown event type 0x{event_raw:02x}")
    if flags_raw & ~_KNOWN_FLAGS:
        return _malformed(f"reserved flag bits set: 0x{flags_raw:02x}")
    if battery_raw > 100 and battery_raw != const.BATTERY_UNKNOWN:
        return _malformed(f"battery {battery_raw} is not 0..100 or 255")
    if timestamp_ms < 0:
        return _malformed("negative timestamp")
    end_id = const.HEADER_SIZE + id_len
    if len(data) < end_id:
        return _malformed("frame ends inside the device id")
    raw_id = data[const.HEADER_SIZE : end_id]
    if not _DEVICE_ID.fullmatch(raw_id):
        return _malformed("device id is not 1-32 chars of [A-Za-z0-9._-]")
    gps: GpsFix | None = None
    cells: tuple[CellObservation, ...] = ()
    seen: set[int] = set()
    pos = end_id
    while pos < len(data):
        if pos + 2 > len(data):
            return _malformed(f"truncated extension header at byte {pos}")
        tlv_type, tlv_len = data[pos], data[pos + 1]
        value_start, pos = pos + 2, pos + 2 + tlv_len
        if pos > len(data):
            return _malformed(f"extension 0x{tlv_type:02x} runs past the end of the frame")
        if tlv_type in seen:
            return _malformed(f"extension 0x{tlv_type:02x} appears twice")
        seen.add(tlv_type)
        if tlv_type == const.TLV_GPS:
            if tlv_len != const.GPS_TLV_SIZE:
                return _malformed(f"GPS extension is {tlv_len} bytes, expected {const.GPS_TLV_SIZE}")
            lat, lon, accuracy, age = _GPS.unpack_from(data, value_start)
            if abs(lat) > 90 * const.GPS_SCALE or abs(lon) > 180 * const.GPS_SCALE:
                return _malformed("GPS coordinates out of range")
            gps = GpsFix(lat / const.GPS_SCALE, lon / const.GPS_SCALE, accuracy, age)
        elif tlv_type == const.TLV_CELLS:
            decoded = _decode_cells(data[value_start:pos])
            if isinstance(decoded, Rejection):
                return decoded
            cells = decoded
        elif tlv_type < const.TLV_OPTIONAL_FROM:
            return _malformed(f"unknown critical extension 0x{tlv_type:02x}")
    return AlertFrame(
        device_id=raw_id.decode("ascii"),
        counter=counter,
        timestamp_ms=timestamp_ms,
        event=event,
        flags=Flags(flags_raw),
        battery=None if battery_raw == const.BATTERY_UNKNOWN else battery_raw,
        gps=gps,
        cells=cells,
    )
