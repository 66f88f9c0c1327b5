"""Measures of a pace from call timestamps: the busiest window of calls, and the assertion that calls
kept to a rate (with the jitter a loaded machine adds).

Used by test_pacing.py and test_rate_limiter.py.
"""

from __future__ import annotations


def busiest_window(times: list[float], seconds: float = 1.0) -> int:
    """The most events in any half-open window [t, t + seconds) (the busiest one starts at an event)."""
    return len(busiest_events(times, seconds))


def busiest_events(times: list[float], seconds: float = 1.0) -> list[float]:
    """The events of the busiest half-open window [t, t + seconds), in order."""
    times = sorted(times)
    best, start = (0, 0), 0
    for end, t in enumerate(times):
        while t - times[start] >= seconds:
            start += 1
        if end - start + 1 > best[1] - best[0]:
            best = (start, end + 1)
    return times[best[0] : best[1]]


def _offsets(events: list[float]) -> str:
    """Events as milliseconds after the first: enough to tell a burst from a stall."""
    return ", ".join(f"{1000 * (t - events[0]):.0f}" for t in events)


def busiest_second(times: list[float]) -> int:
    return busiest_window(times, 1.0)


# Why +1: calls spaced exactly 1/rate apart put rate + 1 of them in a closed 1 s window (the first
# and the last on its two edges), and a timestamp taken a moment after the call left (transit, thread
# switch) can pull the next one inside. More than that means the pacing itself let calls through early.
def assert_paced(times: list[float], rate: float, jitter_calls: int = 0) -> None:
    """`jitter_calls`: extra calls a 1 s window may show when the timestamps are taken at the far
    end of a socket on a loaded machine (a stalled thread stamps a few calls together)."""
    most = rate + 1 + jitter_calls
    busiest = busiest_events(times, 1.0)
    assert len(busiest) <= most, (
        f"{len(busiest)} calls in one second at {rate}/s, at ms {_offsets(busiest)}"
    )
    # Over three seconds the same jitter weighs a third as much: a limiter even 20% fast fails here.
    assert busiest_window(times, 3.0) <= 3 * rate + 2, (
        f"{busiest_window(times, 3.0)} calls in three seconds at {rate}/s"
    )
    # The run as a whole: n calls need n - 1 intervals; one may be absorbed by the same jitter.
    span = max(times) - min(times)
    assert span >= (len(times) - 2) / rate, f"{len(times)} calls in {span:.2f} s at {rate}/s"
