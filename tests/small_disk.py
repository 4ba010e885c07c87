"""A small real file system for full-disk tests: a tmpfs, mounted and filled.

Needs root (or CAP_SYS_ADMIN); tests that use it are skipped where mounting
is not allowed. Whoever mounts unmounts, whatever the test did.
"""

import contextlib
import errno
import os
import subprocess

import pytest

#: the file that takes the free space
FILLER = "filler"


@contextlib.contextmanager
def mounted(path, size="1m"):
    """A tmpfs of `size` at `path` (made); unmounted (lazily if busy) after."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(root):
    """Take every free byte of `root`'s file system; returns the filler's path."""
    p = root / FILLER
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for n in (64 * 1024, 4096, 1):
            b = b"\xff" * n
            while True:
                try:
                    if os.write(fd, b) < n:
                        break
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return p


def free(root):
    """Give the space back."""
    (root / FILLER).unlink()
