"""The agent's file ops: read, write and list files inside its run root.

Paths come from the supervisor and are resolved inside the run root (no
escape through ``..`` or symlinks); blocking, so the client runs them in a
thread. Large files are read in chunks (``offset``), each below the message
size limit once base64 encoded.
"""

import base64
import binascii
import os
import shutil
import stat

from agent import rundir

#: largest chunk ``fetch_file`` returns, below the message size limit once
#: base64 encoded
MAX_FETCH_BYTES = 8 * 1024 * 1024

#: entries ``list_files`` returns at most
MAX_LIST_ENTRIES = 10000


class FileError(Exception):
    """A file op refused; the message goes back to the supervisor."""


def read_file(root, path, max_bytes, offset=0):
    """Up to `max_bytes` of a regular file from `offset`, base64 encoded."""
    p = rundir.resolve_inside(root, path)
    if p is None:
        raise FileError(f"path={path!r} is not inside run_root")
    # O_NONBLOCK: a FIFO left by a simulation must not hang the thread;
    # O_NOFOLLOW and the check of what was opened: a symlink swapped in
    # after resolve_inside must not reach outside the run root
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        s = os.fstat(fd)
        if not stat.S_ISREG(s.st_mode):
            raise FileError(f"path={path!r} is not a regular file")
        real = os.readlink(f"/proc/self/fd/{fd}")
        r = os.path.realpath(root)
        if real == r or os.path.commonpath([real, r]) != r:
            raise FileError(f"path={path!r} is not inside run_root")
        n = min(max_bytes, MAX_FETCH_BYTES)
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        b = []
        k = 0
        while k < n:
            x = os.read(fd, n - k)
            if not x:
                break
            b.append(x)
            k += len(x)
    finally:
        os.close(fd)
    c = b"".join(b)
    return {
        "content_b64": base64.b64encode(c).decode("ascii"),
        "size": s.st_size,
        "offset": offset,
        "truncated": s.st_size > offset + len(c),
    }


def remove_dir(root, name, busy):
    """Remove run directory `name` of the run root (a deleted simulation's).

    Args:
        busy (set): run directories of runs still going: refused
    Returns:
        bool: whether there was one
    """
    if name in busy:
        raise FileError(f"run_dir={name!r} has a run still going")
    if not name or "/" in name or name.startswith("."):
        raise FileError(f"run_dir={name!r} is not a run directory's name")
    p = os.path.join(root, name)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        # a code may have put a symlink there: that goes, not what it names
        os.unlink(p)
        return True
    shutil.rmtree(p)
    return True


def write_file(root, path, content_b64):
    """Write a file atomically and durably (`agent.rundir.write_atomic`)."""
    p = rundir.resolve_inside(root, path)
    if p is None:
        raise FileError(f"path={path!r} is not inside run_root")
    try:
        c = base64.b64decode(content_b64, validate=True)
    except binascii.Error as e:
        raise FileError(f"content is not base64: {e}") from e
    if p.is_dir():
        raise FileError(f"path={path!r} is a directory")
    p.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_atomic(p, c)
    return {"size": len(c)}


def list_files(root, path):
    """Regular files under directory `path` (no symlinks followed), sorted.

    Returns:
        dict: files: [{path (relative to `path`), size, mtime}], truncated
    """
    d = rundir.resolve_inside(root, path)
    if d is None:
        raise FileError(f"path={path!r} is not inside run_root")
    rv = []
    if d.is_symlink() or not d.is_dir():
        return {"files": rv, "truncated": False}
    for top, dirs, names in os.walk(d, followlinks=False):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(top, n)
            s = os.lstat(p)
            if not stat.S_ISREG(s.st_mode):
                continue
            if len(rv) >= MAX_LIST_ENTRIES:
                return {"files": rv, "truncated": True}
            rv.append(
                {
                    "path": os.path.relpath(p, d),
                    "size": s.st_size,
                    "mtime": s.st_mtime,
                }
            )
    return {"files": rv, "truncated": False}
