"""Per-device replay window over frame counters (sans-I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

#: The mask lives in a signed 64-bit database column, so the window is at most 63 counters.
MAX_WINDOW: Final = 63


class CounterVerdict(enum.Enum):
    """What a counter means against a device's window."""

    #: Never seen: accept it.
    FRESH = "fresh"
    #: Seen before: the same frame again (an idempotent retry) or a replay; the store decides by digest.
    SEEN = "seen"
    #: Behind the window: cannot be proven fresh. A retry of a stored frame is still recognised by digest.
    TOO_OLD = "too-old"


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """The counters a device has used.

    high: highest counter accepted, -1 before the first.
    mask: bit i set means counter (high - i) was accepted (bit 0 is `high` itself).
    """

    high: int = -1
    mask: int = 0

    def check(self, counter: int, window: int) -> CounterVerdict:
        """Classify `counter`; `window` counters behind `high` are tolerated out of order."""
        window = min(window, MAX_WINDOW)
        if counter > self.high:
            return CounterVerdict.FRESH
        behind = self.high - counter
        if behind >= window:
            return CounterVerdict.TOO_OLD
        return CounterVerdict.SEEN if self.mask >> behind & 1 else CounterVerdict.FRESH

    def accept(self, counter: int, window: int) -> ReplayWindow:
        """The window after accepting a FRESH counter."""
        full = (1 << min(window, MAX_WINDOW)) - 1
        if counter > self.high:
            shift = counter - self.high
            mask = (self.mask << shift | 1) & full if shift < MAX_WINDOW + 1 else 1
            return ReplayWindow(counter, mask)
        return ReplayWindow(self.high, (self.mask | 1 << (self.high - counter)) & full)
