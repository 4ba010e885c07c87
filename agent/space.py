"""A run's files against what its user may store: measured while it runs.

The supervisor counts a user's stored bytes (its ``supervisor.usage``) and
gives each local or Docker run the room left as the op's ``max_bytes``: what
its run directory may reach. No file system quota is there to hold a code to
that (the data directory is one tree on one file system), so the pool walks
the run directory while the run goes (`watch`) and ends the run once it has
passed the room, and once more when it ends (`over`). A walk costs in
proportion to the files there: the next one waits at least `CHECK_SECS` and
long enough that walking takes at most `MAX_SHARE` of a core, but never more
than `MAX_CHECK_SECS`. No one file can grow past the room in between: the
code runs with that as its RLIMIT_FSIZE (`agent.keeper`), so a write past
it fails (SIGXFSZ, or EFBIG if the code ignores that signal). Bytes of files
deleted while still open are not seen by a walk: they are freed when the
run ends, within its max run time.
"""

import asyncio
import os
import stat
import time

#: what an entry of a run directory counts at least (an inode's worth:
#: a million empty files are not free)
MIN_ENTRY_BYTES = 512

#: least time between two walks of a run directory
CHECK_SECS = 1.0
#: of one core, at most, spent walking a run directory, unless that would
#: put more than `MAX_CHECK_SECS` between two walks
MAX_SHARE = 0.05
MAX_CHECK_SECS = 5.0


def dir_bytes(path, staged=None):
    """Bytes that what is under `path` takes (no symlink followed); blocking.

    Each entry counts what it takes on disk, and at least `MIN_ENTRY_BYTES`
    (its inode): a regular file its length or its blocks, whichever is more
    (a sparse file counts all of it: what a copy of it would take), a
    directory or a symlink its blocks (a long symlink target, the names of
    many entries). A library file linked in counts in the library instead:
    one of the supervisor's disk (root's, read-only), or one of `staged`
    (``{(st_dev, st_ino): size}``, fetched into the agent's cache,
    `agent.staging`), as long as it is no longer than that.

    Returns:
        int: 0 if there is no such directory
    """
    staged = staged or {}
    n = 0
    todo = [path]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    b = st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        todo.append(e.path)
                    elif stat.S_ISREG(st.st_mode):
                        if _is_library_link(st) or st.st_size <= staged.get(
                            (st.st_dev, st.st_ino), -1
                        ):
                            continue
                        b = max(b, st.st_size)
                    n += max(b, MIN_ENTRY_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return n


def _is_library_link(st):
    """A library file linked in (root's, read-only, more than one name): its
    bytes are the library's, counted there (`supervisor.library`)."""
    return st.st_uid == 0 and st.st_nlink > 1 and not st.st_mode & 0o222


def error(n, max_bytes):
    """The run's error once its directory holds `n` bytes, over `max_bytes`."""
    return (
        f"its files passed the room its user's plan has left: {n} bytes written, "
        f"{max_bytes} allowed (the plan's stored bytes)"
    )


async def over(run, root=None):
    """Bytes of `run`'s directory if over its ``max_bytes``, else None.

    Args:
        root (callable): ``() -> (path, held)`` of the run root, walked
            instead when the op says ``max_bytes_root`` (a Docker volume of the
            user's: what a code writes beside its directory counts too),
            and what the library cache there holds (`agent.staging.Cache.held`)
    """
    m = run.op.get("max_bytes")
    if m is None or run.dir is None:
        return None
    p, s = run.dir, dict(run.staged_inodes)
    if root is not None and run.op.get("max_bytes_root"):
        p, h = root()
        s.update(h)
    n = await asyncio.get_running_loop().run_in_executor(None, dir_bytes, p, s)
    return n if n > m else None


async def watch(run, on_over, root=None):
    """Walk `run`'s directory until cancelled; ``on_over(n)`` once it is over.

    Does nothing for a run without ``max_bytes``; `root` as for `over`.
    """
    if run.op.get("max_bytes") is None:
        return
    wait = CHECK_SECS
    while True:
        await asyncio.sleep(wait)
        t = time.monotonic()
        n = await over(run, root)
        if n is not None:
            on_over(n)
            return
        wait = min(MAX_CHECK_SECS, max(CHECK_SECS, (time.monotonic() - t) / MAX_SHARE))
