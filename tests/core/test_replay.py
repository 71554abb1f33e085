"""The replay window against a model that remembers every counter it accepted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.replay import MAX_WINDOW, CounterVerdict, ReplayWindow


@settings(max_examples=400)
@given(
    window=st.integers(min_value=1, max_value=MAX_WINDOW),
    counters=st.lists(st.integers(min_value=0, max_value=300), max_size=120),
)
def test_window_matches_a_model_that_remembers_everything(window: int, counters: list[int]) -> None:
    state = ReplayWindow()
    accepted: set[int] = set()
    for c in counters:
        verdict = state.check(c, window)
        high = max(accepted, default=-1)
        if c > high:
            expected = CounterVerdict.FRESH
        elif high - c >= window:
            expected = CounterVerdict.TOO_OLD
        else:
            expected = CounterVerdict.SEEN if c in accepted else CounterVerdict.FRESH
        assert verdict is expected, (c, sorted(accepted), window)
        if verdict is CounterVerdict.FRESH:
            state = state.accept(c, window)
            accepted.add(c)
        assert 0 <= state.mask < 1 << MAX_WINDOW, "the mask must fit a signed 64-bit column"


def test_a_counter_is_never_accepted_twice() -> None:
    state = ReplayWindow().accept(5, 63)
    assert state.check(5, 63) is CounterVerdict.SEEN
    state = state.accept(7, 63)
    assert state.check(6, 63) is CounterVerdict.FRESH
    assert state.check(5, 63) is CounterVerdict.SEEN
    assert state.check(7, 63) is CounterVerdict.SEEN


def test_a_huge_jump_forgets_the_past_but_refuses_it_as_too_old() -> None:
    state = ReplayWindow().accept(1, 63).accept(10_000_000, 63)
    assert state.check(1, 63) is CounterVerdict.TOO_OLD
    assert state.check(10_000_000 - 62, 63) is CounterVerdict.FRESH


def test_a_window_wider_than_the_mask_is_clamped() -> None:
    state = ReplayWindow().accept(100, 64)
    assert state.check(100 - 63, 64) is CounterVerdict.TOO_OLD
