"""A bounded rate per client: one token bucket per client address, in process memory.

The endpoint is a single small process that only inserts; its buckets are a shield against one
client's flood, not a coordination between processes (each replica keeps its own). The number of
clients tracked is bounded: beyond it the least recently seen client is forgotten, and comes back
with a full bucket.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """`burst` requests at once, then `per_minute` a minute, for each of at most `max_clients`."""

    per_minute: float = 30.0
    burst: int = 10
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1 or self.max_clients < 1:
            raise ValueError("per_minute must be > 0, burst and max_clients at least 1")


def client_key(client: tuple[str, int] | list | None) -> str:
    """The bucket a client draws from: its IPv4 address, or its IPv6 /64 (one subscriber's
    network, where a host picks addresses at will)."""
    if not client:
        return "unknown"
    host = str(client[0])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class ClientBuckets:
    """`allow(key)` takes a token from the client's bucket: (True, 0) or (False, seconds to wait)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._per_second = limit.per_minute / 60.0
        # key -> (tokens left, when they were counted); oldest-seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str) -> tuple[bool, float]:
        now = self._clock()
        tokens, seen = self._buckets.pop(key, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - seen) * self._per_second)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        while len(self._buckets) >= self.limit.max_clients:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens, now)
        return allowed, 0.0 if allowed else (1.0 - tokens) / self._per_second
