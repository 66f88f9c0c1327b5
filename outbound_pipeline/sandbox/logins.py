"""iAdvize's login policy, as the sandbox enforces it: 10 logins a minute per user and 100 per IP
address; beyond, HTTP 429 with Retry-After (the seconds until the oldest login of the minute ages
out). Only logins that got a token count. The time of every login is kept for tests and operators
(`/_sandbox/stats`: `login_times`, `logins_refused`).
"""

from __future__ import annotations

import threading
import time
from collections import deque

LOGIN_WINDOW_SECONDS = 60.0
USER_LOGINS_PER_MINUTE = 10
IP_LOGINS_PER_MINUTE = 100


class LoginPolicy:
    """Logins allowed per user and per IP address in a sliding minute; 0 turns a limit off."""

    def __init__(
        self, per_user: int = USER_LOGINS_PER_MINUTE, per_ip: int = IP_LOGINS_PER_MINUTE
    ) -> None:
        self.per_user = per_user
        self.per_ip = per_ip
        self._by_user: dict[str, deque[float]] = {}
        self._by_ip: dict[str, deque[float]] = {}
        self._times: list[float] = []  # Unix time of every login allowed
        self.refused = 0
        self._lock = threading.Lock()

    def admit(self, username: str, ip: str) -> float | None:
        """Count a login of `username` from `ip` now (None), or refuse it: the seconds until one
        would be allowed (nothing counted)."""
        now = time.monotonic()
        with self._lock:
            user = self._recent(self._by_user, username, now)
            address = self._recent(self._by_ip, ip, now)
            waits = [
                recent[0] + LOGIN_WINDOW_SECONDS - now
                for recent, limit in ((user, self.per_user), (address, self.per_ip))
                if limit and len(recent) >= limit
            ]
            if waits:
                self.refused += 1
                return max(waits)
            user.append(now)
            address.append(now)
            self._times.append(time.time())
            return None

    @staticmethod
    def _recent(table: dict[str, deque[float]], key: str, now: float) -> deque[float]:
        recent = table.setdefault(key, deque())
        while recent and recent[0] <= now - LOGIN_WINDOW_SECONDS:
            recent.popleft()
        return recent

    def times(self) -> list[float]:
        with self._lock:
            return list(self._times)

    def reset(self) -> None:
        """Forget the history: counts and times (`/_sandbox/reset`)."""
        with self._lock:
            self._by_user.clear()
            self._by_ip.clear()
            self._times.clear()
            self.refused = 0


def most_in_window(times: list[float], window: float = LOGIN_WINDOW_SECONDS) -> int:
    """The largest number of `times` (seconds) within any `window` seconds."""
    ordered = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most
