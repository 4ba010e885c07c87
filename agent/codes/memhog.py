"""Test code: takes ``mib`` MiB of memory (touched, not just reserved), holds it.

With ``delay``, it waits that long first (a run re-attached meanwhile).

For memory limits: under a limit below ``mib`` the kernel's OOM killer ends
it, and the run must end ``error`` with "out of memory". Bounded by the
catalog's maximum and by ``secs``, so it never lingers.
"""

import time

from agent.codes import report

DEFAULTS = {"mib": 64, "secs": 1.0, "delay": 0.0}

#: allocation step; each is filled so its pages are really used
_CHUNK_MIB = 16


def main():
    p = report.params(DEFAULTS)
    mib = max(0, p["mib"])
    if p["delay"] > 0:
        print(f"memhog: waiting {p['delay']} s", flush=True)
        time.sleep(p["delay"])
    print(f"memhog: taking {mib} MiB", flush=True)
    held = []
    n = 0
    while n < mib:
        k = min(_CHUNK_MIB, mib - n)
        # a repeated non-zero byte: every page is written
        held.append(b"\x5a" * (k * 1024 * 1024))
        n += k
        report.progress(0.9 * n / mib)
    print(f"memhog: holding {n} MiB for {p['secs']} s", flush=True)
    time.sleep(max(0.0, p["secs"]))
    print("memhog: done", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()
