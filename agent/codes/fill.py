"""Test code: writes ``bytes`` bytes into ``fill.dat`` in chunks, with progress.

For output-size handling (disk quotas, file fetch limits). ``secs`` spreads
the writing over that long (a code that fills its disk as it goes).
"""

import time

from agent.codes import report

DEFAULTS = {"bytes": 1024 * 1024, "secs": 0.0}

OUT_FILE = "fill.dat"

#: write size; a fixed, non-zero pattern so the file is not sparse
_CHUNK = bytes(range(256)) * 4096


def main():
    p = report.params(DEFAULTS)
    total = max(0, p["bytes"])
    print(f"fill: writing {total} bytes to {OUT_FILE}", flush=True)
    chunks = -(-total // len(_CHUNK))
    stride = report.every(chunks)
    done = 0
    t0 = time.monotonic()
    with open(OUT_FILE, "wb") as f:
        for i in range(1, chunks + 1):
            # on schedule: chunk i is written at secs * i / chunks
            time.sleep(max(0.0, t0 + p["secs"] * (i - 1) / chunks - time.monotonic()))
            n = min(len(_CHUNK), total - done)
            f.write(_CHUNK[:n] if n < len(_CHUNK) else _CHUNK)
            f.flush()
            done += n
            if i % stride == 0 and i < chunks:
                report.progress(done / total)
    print(f"fill: wrote {done} bytes", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()
