"""The ephemeral-id table: O(1) resolution of current and neighbouring windows, incremental changes."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.ephemeral import NEIGHBOUR_WINDOWS, EphemeralIdTable, EphemeralMatch
from gateway.protocol import EventType
from gateway.protocol.advert import (
    AdvertKeys,
    AdvertSignal,
    ParsedAdvert,
    derive_advert_keys,
    encode_advert,
    open_advert,
    parse_advert,
)

NOW = 1_963_584


def keys_for(i: int) -> AdvertKeys:
    return derive_advert_keys(hashlib.sha256(b"device %d" % i).digest(), f"wb-{i:05d}")


DEVICES = [keys_for(i) for i in range(20)]


def test_resolves_current_and_neighbouring_windows_only() -> None:
    table = EphemeralIdTable(DEVICES)
    assert table.resolve(DEVICES[0].ephemeral_id(NOW)) is None, "nothing before the first rotate"
    table.rotate(NOW)
    assert table.window == NOW
    assert list(table.windows()) == [NOW - 1, NOW, NOW + 1]
    for k in DEVICES:
        for window in (NOW - 1, NOW, NOW + 1):
            assert table.resolve(k.ephemeral_id(window)) == EphemeralMatch(k.device_id, window, k)
        for window in (NOW - 3, NOW - 2, NOW + 2, NOW + 3):
            assert table.resolve(k.ephemeral_id(window)) is None
    assert table.resolve(bytes(8)) is None


def test_rotation_moves_the_windows_incrementally_and_back() -> None:
    table = EphemeralIdTable(DEVICES)
    table.rotate(NOW)
    k = DEVICES[3]
    table.rotate(NOW + 1)
    assert table.resolve(k.ephemeral_id(NOW - 1)) is None
    assert table.resolve(k.ephemeral_id(NOW + 2)) == EphemeralMatch(k.device_id, NOW + 2, k)
    table.rotate(NOW + 100)
    assert table.resolve(k.ephemeral_id(NOW + 1)) is None
    assert table.resolve(k.ephemeral_id(NOW + 99)) is not None
    table.rotate(NOW)  # the clock went back
    assert table.resolve(k.ephemeral_id(NOW - 1)) is not None
    assert table.resolve(k.ephemeral_id(NOW + 99)) is None
    assert len(table._by_eid) == len(DEVICES) * (2 * NEIGHBOUR_WINDOWS + 1)


def test_add_and_remove_devices() -> None:
    table = EphemeralIdTable(DEVICES[:10])
    table.rotate(NOW)
    new = DEVICES[15]
    assert new.device_id not in table
    table.add(new)
    assert new.device_id in table
    assert len(table) == 11
    assert table.resolve(new.ephemeral_id(NOW + 1)) == EphemeralMatch(new.device_id, NOW + 1, new)
    table.remove(DEVICES[0].device_id)
    table.remove("never-registered")
    assert table.resolve(DEVICES[0].ephemeral_id(NOW)) is None
    assert table.keys_of(DEVICES[0].device_id) is None
    assert table.keys_of(new.device_id) is new
    replaced = derive_advert_keys(bytes(32), new.device_id)
    table.add(replaced)  # re-enrolled with a new key: the old ids stop resolving
    assert table.resolve(new.ephemeral_id(NOW)) is None
    assert table.resolve(replaced.ephemeral_id(NOW)) == EphemeralMatch(new.device_id, NOW, replaced)
    assert len(table._by_eid) == 10 * 3


def test_window_edges() -> None:
    table = EphemeralIdTable(DEVICES[:2])
    table.rotate(0)
    assert list(table.windows()) == [0, 1]
    table.rotate(2**32 - 1)
    assert list(table.windows()) == [2**32 - 2, 2**32 - 1]
    with pytest.raises(ValueError, match="u32"):
        table.rotate(2**32)


class _FixedEid(AdvertKeys):
    """Keys whose ids collide on purpose (real ones collide with odds of 2^-64)."""

    __slots__ = ()

    def ephemeral_id(self, window: int) -> bytes:
        return b"collide!"


def test_colliding_ids_keep_every_candidate() -> None:
    a = _FixedEid("wb-a", bytes(16), bytes(16), bytes(16))
    b = _FixedEid("wb-b", bytes(16), bytes(16), bytes(16))
    table = EphemeralIdTable([a, b])
    table.rotate(NOW)
    candidates = table.candidates(b"collide!")
    assert {(m.device_id, m.window) for m in candidates} == {
        (d, w) for d in ("wb-a", "wb-b") for w in (NOW - 1, NOW, NOW + 1)
    }
    assert table.resolve(b"collide!") == candidates[0]
    table.remove("wb-a")
    assert {m.device_id for m in table.candidates(b"collide!")} == {"wb-b"}
    table.rotate(NOW + 5)
    assert len(table.candidates(b"collide!")) == 3
    table.remove("wb-b")
    assert table.candidates(b"collide!") == ()
    assert not table._extra
    assert not table._by_eid


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "remove", "rotate"]), st.integers(0, 19), st.integers(-3, 3))))
def test_table_always_equals_a_fresh_build(ops: list[tuple[str, int, int]]) -> None:
    table = EphemeralIdTable()
    present: dict[str, AdvertKeys] = {}
    window = NOW
    for op, i, step in ops:
        if op == "add":
            table.add(DEVICES[i])
            present[DEVICES[i].device_id] = DEVICES[i]
        elif op == "remove":
            table.remove(DEVICES[i].device_id)
            present.pop(DEVICES[i].device_id, None)
        else:
            window += step
            table.rotate(window)
    fresh = EphemeralIdTable(present.values())
    if table.window is not None:
        fresh.rotate(table.window)
    assert table._by_eid == fresh._by_eid
    assert len(table) == len(present)


def test_resolve_then_open_an_advert() -> None:
    table = EphemeralIdTable(DEVICES)
    table.rotate(NOW)
    data = encode_advert(DEVICES[7], 99, EventType.FALL, 12, NOW + 1)  # the device clock is one window ahead
    parsed = parse_advert(data)
    assert isinstance(parsed, ParsedAdvert)
    match = table.resolve(parsed.eid)
    assert match is not None
    assert open_advert(parsed, match.keys, match.window) == AdvertSignal(
        DEVICES[7].device_id, 99, EventType.FALL, 12, NOW + 1
    )


def test_ten_thousand_devices_build_fast() -> None:
    keys = [keys_for(i) for i in range(10_000)]
    started = time.perf_counter()
    table = EphemeralIdTable(keys)
    table.rotate(NOW)
    built = time.perf_counter() - started
    started = time.perf_counter()
    table.rotate(NOW + 1)
    rotated = time.perf_counter() - started
    assert len(table._by_eid) == 30_000
    assert built < 2.0, f"built in {built:.2f} s"
    assert rotated < 1.0, f"rotated in {rotated:.2f} s"
    assert table.resolve(keys[9_999].ephemeral_id(NOW + 2)) is not None
