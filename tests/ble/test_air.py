"""The virtual air: the path-loss model as pure functions, and controllers on the link hearing by it."""

from __future__ import annotations

import random

import pytest

from firmware_sim.air import PathLossModel, Position, VirtualAir, distance_m, expected_rssi, sample_rssi

MODEL = PathLossModel(tx_power_at_1m_dbm=-59.0, exponent=2.0, noise_sigma_db=0.0, range_m=30.0, floor_loss_db=15.0)
ORIGIN = Position("hq", 0, 0.0, 0.0)


def test_rssi_at_one_metre_is_the_calibrated_power() -> None:
    assert expected_rssi(MODEL, ORIGIN, Position("hq", 0, 1.0, 0.0)) == pytest.approx(-59.0)


def test_rssi_drops_by_ten_times_the_exponent_per_decade() -> None:
    assert expected_rssi(MODEL, ORIGIN, Position("hq", 0, 10.0, 0.0)) == pytest.approx(-79.0)
    steeper = PathLossModel(exponent=3.0, range_m=100.0)
    assert expected_rssi(steeper, ORIGIN, Position("hq", 0, 10.0, 0.0)) == pytest.approx(-59.0 - 30.0)


def test_closer_is_stronger() -> None:
    rssis = [expected_rssi(MODEL, ORIGIN, Position("hq", 0, d, 0.0)) for d in (0.5, 1.0, 2.0, 5.0, 20.0)]
    assert all(r is not None for r in rssis)
    assert rssis == sorted(rssis, reverse=True)  # type: ignore[type-var]


def test_beyond_range_or_on_another_site_nothing_is_heard() -> None:
    assert expected_rssi(MODEL, ORIGIN, Position("hq", 0, 30.1, 0.0)) is None
    assert expected_rssi(MODEL, ORIGIN, Position("annex", 0, 1.0, 0.0)) is None
    assert distance_m(MODEL, ORIGIN, Position("annex", 0, 0.0, 0.0)) is None


def test_floors_add_distance_and_slab_loss() -> None:
    above = Position("hq", 1, 0.0, 0.0)
    assert distance_m(MODEL, ORIGIN, above) == pytest.approx(MODEL.floor_height_m)
    same_floor_equivalent = expected_rssi(MODEL, ORIGIN, Position("hq", 0, MODEL.floor_height_m, 0.0))
    assert same_floor_equivalent is not None
    assert expected_rssi(MODEL, ORIGIN, above) == pytest.approx(same_floor_equivalent - 15.0)


def test_zero_distance_is_clamped_not_infinite() -> None:
    rssi = sample_rssi(MODEL, ORIGIN, ORIGIN, random.Random(0))
    assert rssi is not None
    assert rssi <= 20


def test_noise_is_gaussian_around_the_mean_and_seedable() -> None:
    noisy = PathLossModel(exponent=2.0, noise_sigma_db=4.0)
    receiver = Position("hq", 0, 10.0, 0.0)
    first = [sample_rssi(noisy, ORIGIN, receiver, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same draw
    samples = [sample_rssi(noisy, ORIGIN, receiver, rng) for rng in [random.Random(1)] for _ in range(2000)]
    values = [s for s in samples if s is not None]
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    assert mean == pytest.approx(-79.0, abs=0.5)
    assert spread == pytest.approx(4.0, abs=0.5)


def test_noise_never_makes_an_out_of_range_receiver_hear() -> None:
    noisy = PathLossModel(noise_sigma_db=20.0, range_m=10.0)
    rng = random.Random(3)
    assert all(sample_rssi(noisy, ORIGIN, Position("hq", 0, 11.0, 0.0), rng) is None for _ in range(200))


async def test_nodes_get_distinct_loopback_ports_and_close_them() -> None:
    async with VirtualAir(MODEL, seed=1) as air:
        a = await air.add_node("a", ORIGIN)
        b = await air.add_node("b", Position("hq", 0, 3.0, 0.0))
        inner = await air.add_node("inner", ORIGIN, expose=False)
        ports = air.ports()
        assert set(ports) == {"a", "b"}
        assert ports["a"] != ports["b"]
        assert a.transport_spec == f"tcp-client:127.0.0.1:{ports['a']}"
        assert inner.port is None
        with pytest.raises(ValueError, match="in-process"):
            _ = inner.transport_spec
        assert b.controller in air.link.controllers
    assert not air.nodes
    assert not air.link.controllers
