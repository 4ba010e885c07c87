"""Files of the agent's in a directory a run's code owns (the run directory).

The code may put a symlink, a FIFO or a device where the agent (often root)
writes one of its own files: `open_for_writing` never follows or blocks on
what it finds there. Stdlib only (no import of the rest of the agent).
"""

import errno
import os
import shutil
import stat


def open_for_writing(path):
    """Open (truncate) a file of the agent's in a run directory the code owns.

    The code may have put a symlink, a FIFO or a device there to make the
    agent (often root) write elsewhere or block: whatever is at `path` and
    is not a regular file is removed first, and the last component is never
    followed.

    Returns:
        int: the file descriptor (the caller closes it)
    """
    f = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
    for _ in range(3):
        try:
            fd = os.open(path, f | os.O_CLOEXEC, 0o644)
        except OSError as e:
            # ELOOP: a symlink; ENXIO: a FIFO without a reader
            if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            _remove(path)
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
        _remove(path)
    raise OSError(errno.EEXIST, f"{path} keeps being replaced", str(path))


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
