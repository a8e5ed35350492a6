"""Rate limits: a token bucket per connection. Pure: callers pass the time."""

from __future__ import annotations


class TokenBucket:
    """Allows `rate` units per second on average, and bursts of up to `capacity`."""

    __slots__ = ("_capacity", "_level", "_rate", "_updated")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate = rate
        self._capacity = capacity
        self._level = capacity
        self._updated = now

    def allow(self, cost: float, now: float) -> bool:
        """Take `cost` units if there are enough; return whether it was allowed."""
        self._level = min(self._capacity, self._level + (now - self._updated) * self._rate)
        self._updated = now
        if cost > self._level:
            return False
        self._level -= cost
        return True
