"""Rate limits: token buckets per caller, and slowed-down failed sign-ins.

Pure: no I/O, no awaits; time is passed in. A `Limiter` keeps one bucket
per key (a user's name, or a client address for requests without a valid
credential); a request takes a token or is refused with the seconds until
one is back (the `Retry-After` of a 429). Wrong credentials take from a
bucket of their own per address that refills slowly, so guessing tokens
is slow while a user who mistyped once is not held up. Buckets that are
full again are forgotten, so memory follows the callers of the last
minutes, not all callers ever.
"""

import math

#: keep at most this many buckets; the fullest (least recently used) go first
_MAX_KEYS = 100_000


class Bucket:
    def __init__(self, rate_per_sec, burst, now):
        self.rate_per_sec = rate_per_sec
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def take(self, now):
        """Take a token: 0.0, or the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate_per_sec)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_sec

    def full_at(self):
        """When it will be full again (then it can be forgotten)."""
        return self.at + (self.burst - self.tokens) / self.rate_per_sec


class Limiter:
    def __init__(self, rate_per_sec, burst):
        """
        Args:
            rate_per_sec (float): tokens added per second (0: no limit)
            burst (int): tokens at most (requests in a burst)
        """
        self.rate_per_sec = rate_per_sec
        self.burst = burst
        self._buckets = {}
        self.refused = 0

    def take(self, key, now):
        """0.0 if `key` may go on now, else whole seconds to wait (>= 1)."""
        if self.rate_per_sec <= 0:
            return 0.0
        b = self._buckets.pop(key, None)
        if b is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._forget(now)
            b = Bucket(self.rate_per_sec, self.burst, now)
        # most recently used last (dicts keep insertion order)
        self._buckets[key] = b
        w = b.take(now)
        if w:
            self.refused += 1
            return float(max(1, math.ceil(w)))
        return 0.0

    def _forget(self, now):
        for k in [k for k, b in self._buckets.items() if b.full_at() <= now]:
            del self._buckets[k]
        while len(self._buckets) >= _MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self):
        return len(self._buckets)
