"""Ephemeral-id table: which device sent a BLE advert, in one dict lookup (sans-I/O, no clock reads)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from gateway.protocol.advert import AdvertKeys

#: Windows kept on each side of the current one. One window (15 min) absorbs a device clock that is
#: up to 15 minutes off, and an advert built just before a window boundary that arrives just after it.
NEIGHBOUR_WINDOWS: Final = 1

_U32_MAX: Final = 0xFFFFFFFF


class EphemeralMatch(NamedTuple):
    """What an ephemeral id resolves to."""

    #: The device whose key produced the id.
    device_id: str
    #: The window the id belongs to: pass it to open_advert.
    window: int
    #: The device's advert keys: pass them to open_advert.
    keys: AdvertKeys


class EphemeralIdTable:
    """Ephemeral ids of every registered device for the current window and its neighbours.

    `rotate(window)` moves the table to a window (the caller reads the clock); only the windows that
    enter are computed, so the usual rotation costs one AES block per device. `resolve(eid)` is one
    dict lookup. Two devices whose ids collide in one window (odds about 2^-64 per pair) are both kept;
    `resolve` gives the first and `candidates` all of them.
    """

    __slots__ = ("_by_eid", "_eids", "_extra", "_keys", "_window")

    def __init__(self, keys: Iterable[AdvertKeys] = ()) -> None:
        self._keys: dict[str, AdvertKeys] = {}
        #: eid -> first match; the hot path.
        self._by_eid: dict[bytes, EphemeralMatch] = {}
        #: eid -> further matches, only on collisions (normally empty).
        self._extra: dict[bytes, list[EphemeralMatch]] = {}
        #: device id -> window -> eid, to drop a device's ids when it leaves or a window expires.
        self._eids: dict[str, dict[int, bytes]] = {}
        self._window: int | None = None
        for k in keys:
            self.add(k)

    @property
    def window(self) -> int | None:
        """The current window, None before the first rotate."""
        return self._window

    def windows(self) -> range:
        """The windows whose ids the table holds."""
        if self._window is None:
            return range(0)
        return range(max(self._window - NEIGHBOUR_WINDOWS, 0), min(self._window + NEIGHBOUR_WINDOWS, _U32_MAX) + 1)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._keys

    def keys_of(self, device_id: str) -> AdvertKeys | None:
        """A registered device's keys."""
        return self._keys.get(device_id)

    def add(self, keys: AdvertKeys) -> None:
        """Register a device (or replace its keys)."""
        if keys.device_id in self._keys:
            self.remove(keys.device_id)
        self._keys[keys.device_id] = keys
        eids: dict[int, bytes] = {}
        self._eids[keys.device_id] = eids
        for window in self.windows():
            self._insert(keys, window, eids)

    def remove(self, device_id: str) -> None:
        """Forget a device (e.g. revoked); unknown ids are ignored."""
        if self._keys.pop(device_id, None) is None:
            return
        for window, eid in self._eids.pop(device_id).items():
            self._delete(eid, device_id, window)

    def rotate(self, now_window: int) -> None:
        """Hold the ids of `now_window` and its neighbours; the clock may also go back."""
        if not 0 <= now_window <= _U32_MAX:
            raise ValueError("window out of u32 range")
        old = set(self.windows())
        self._window = now_window
        new = set(self.windows())
        leaving, entering = old - new, sorted(new - old)
        for device_id, eids in self._eids.items():
            for window in leaving:
                self._delete(eids.pop(window), device_id, window)
            keys = self._keys[device_id]
            for window in entering:
                self._insert(keys, window, eids)

    def resolve(self, eid: bytes) -> EphemeralMatch | None:
        """The device and window of an ephemeral id, None when no registered device has it now. O(1)."""
        return self._by_eid.get(eid)

    def candidates(self, eid: bytes) -> tuple[EphemeralMatch, ...]:
        """Every match of an id: more than one only on a collision (try each with open_advert)."""
        first = self._by_eid.get(eid)
        if first is None:
            return ()
        return (first, *self._extra.get(eid, ()))

    def _insert(self, keys: AdvertKeys, window: int, eids: dict[int, bytes]) -> None:
        eid = keys.ephemeral_id(window)
        eids[window] = eid
        match = EphemeralMatch(keys.device_id, window, keys)
        if eid in self._by_eid:
            self._extra.setdefault(eid, []).append(match)
        else:
            self._by_eid[eid] = match

    def _delete(self, eid: bytes, device_id: str, window: int) -> None:
        first = self._by_eid.get(eid)
        extra = self._extra.get(eid)
        if first is not None and first.device_id == device_id and first.window == window:
            if extra:
                self._by_eid[eid] = extra.pop(0)
            else:
                del self._by_eid[eid]
        elif extra:
            extra[:] = [m for m in extra if not (m.device_id == device_id and m.window == window)]
        if extra is not None and not extra:
            del self._extra[eid]
