"""In-memory sign-in throttles: per client address, and per unknown email.

Known accounts count their failures in the store (they survive a restart); an email
with no account gets the same treatment here, so the sign-in page answers alike
whether or not the email exists. Both maps are bounded: the oldest entry goes first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

MAX_KEYS = 10_000


class FailureWindow:
    """Failures per key in a sliding window; ``blocked`` once a key reaches ``limit``."""

    def __init__(self, limit: int, window: float, max_keys: int = MAX_KEYS):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if times is None or len(times) < self.limit:
                return 0
            return max(1, int(times[-self.limit] + self.window - now) + 1)

    def fail(self, key: str) -> int:
        """Count one failure; returns how many are in the window now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque()
            times.append(now)
            self._failures.move_to_end(key)
            while len(times) > self.limit:  # only the last `limit` matter
                times.popleft()
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
            return len(times)

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
