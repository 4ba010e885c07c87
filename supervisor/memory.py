"""Giving memory back to the system once a crowd of connections has gone.

A thousand event streams or agents that close free their objects, but the
memory stays with the process: Tornado's handlers and streams hold
reference cycles, which wait for the cyclic collector, and glibc keeps the
freed pages of its heap. After a burst of closes, and a quiet moment, the
`Trimmer` collects the cycles and asks glibc to give free pages back
(``malloc_trim``), once for the whole burst.
"""

import asyncio
import ctypes
import ctypes.util
import gc
import time

from pykern.pkdebug import pkdlog

#: seconds without a close before the trim: a storm of closes, one trim
TRIM_DELAY_SECS = 2.0

#: closes since the last trim that make one worth its pause
TRIM_AFTER_CLOSES = 100


class Trimmer:
    def __init__(self, delay_secs=TRIM_DELAY_SECS, after_closes=TRIM_AFTER_CLOSES):
        self.trims = 0
        self._delay_secs = delay_secs
        self._after_closes = after_closes
        self._closes = 0
        self._timer = None
        self._malloc_trim = _malloc_trim()

    def closed(self):
        """A connection (event stream, agent) has closed."""
        self._closes += 1
        if self._closes < self._after_closes:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            self._delay_secs, self._trim
        )

    def destroy(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _trim(self):
        self._timer = None
        n = self._closes
        self._closes = 0
        t = time.perf_counter()
        gc.collect()
        if self._malloc_trim is not None:
            self._malloc_trim(0)
        self.trims += 1
        pkdlog(
            "memory trimmed after closes={} in {:.1f} ms",
            n,
            (time.perf_counter() - t) * 1000,
        )


def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library)."""
    n = ctypes.util.find_library("c")
    try:
        f = ctypes.CDLL(n).malloc_trim
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_size_t]
    f.restype = ctypes.c_int
    return f
