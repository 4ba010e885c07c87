"""Following files as they grow: only what was appended, as events.

A `Follower` hands the bytes appended to one file to a callback, reading
from where it left off; `Lines` turns such bytes into whole lines (a piece
without its newline waits for the rest). Events come from inotify
(`Inotify`: the kernel interface through ctypes, since the agent needs
nothing but tornado), one instance for all followers of a loop, watching
each file's directory; where there is no inotify (not Linux, no watches
left, a filesystem whose other nodes' writes raise no event) a follower
polls with a backing-off delay instead.

Handled: a file that appears late (its directory says when), truncation
(read again from the start, and ``on_truncated``), rotation (the name moves
away or is removed: the old file is read to its end, then a new one of that
name from its start), partial lines, and large files (at most `READ_BYTES`
per step, the next step soon after, so the loop stays responsive).
"""

import asyncio
import ctypes
import errno
import os
import stat
import struct
import time

from agent.log import log

#: most bytes read per step (a step ends; the next one is scheduled at once)
READ_BYTES = 4 * 1024 * 1024

#: the poll's delay when there is no inotify: first, then doubling to the max
POLL_SECS = (0.01, 1.0)

#: with ``release``, the space of what was read is given back in pieces of this
RELEASE_BYTES = 1024 * 1024

_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2

_IN_MODIFY = 0x002
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
#: a directory's events about the files in it (with their names)
_DIR_MASK = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO | _IN_MOVED_FROM | _IN_DELETE
_GONE = _IN_MOVED_FROM | _IN_DELETE
_NEW = _IN_CREATE | _IN_MOVED_TO
_EVENT = struct.Struct("iIII")


class Lines:
    """Bytes in, lines out; a line over `max_line_bytes` comes out in pieces.

    Each line is ``(bytes, whole)``: whole is False for a piece of a line
    (a long one cut, what follows such a cut, or what `flush` gives).
    """

    def __init__(self, max_line_bytes):
        self.max_line_bytes = max_line_bytes
        self._pending = b""
        #: the pending bytes continue a line already given in pieces
        self._midline = False

    def feed(self, data):
        b = self._pending + data if self._pending else data
        rv = []
        s = 0
        while True:
            i = b.find(b"\n", s)
            if i < 0:
                break
            rv.append((b[s : i + 1], not self._midline))
            self._midline = False
            s = i + 1
        b = b[s:]
        # a line this long is cut: memory stays bounded
        while len(b) >= self.max_line_bytes:
            rv.append((b[: self.max_line_bytes], False))
            self._midline = True
            b = b[self.max_line_bytes :]
        self._pending = b
        return rv

    def flush(self):
        """The piece still without a newline (the stream ended), if any."""
        b = self._pending
        self._pending = b""
        self._midline = False
        return [(b, False)] if b else []


def _load_libc():
    try:
        c = ctypes.CDLL(None, use_errno=True)
        return c if c.inotify_init1 and c.inotify_add_watch else None
    except (OSError, AttributeError):
        return None


# loaded once: every Inotify uses it
_libc = _load_libc()
if _libc is not None:
    _libc.fallocate.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
    )


class Inotify:
    """One inotify instance on the running loop: directory watches -> callbacks.

    `open` returns None where there is no inotify (followers then poll).
    """

    @classmethod
    def open(cls):
        if _libc is None:
            return None
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log("inotify_unavailable", error=os.strerror(ctypes.get_errno()))
            return None
        return cls(fd)

    def __init__(self, fd):
        self._fd = fd
        #: wd -> {token: callback(mask, name)}
        self._watches = {}
        self._tokens = iter(range(1, 2**62))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def watch_dir(self, path, callback):
        """Call ``callback(mask, name)`` for events of the files in directory `path`.

        After lost events (the queue overflowed) each callback gets
        ``(IN_MODIFY, None)``.

        Returns:
            tuple: the watch, for `unwatch`; None if it cannot be watched
        """
        if self._fd is None:
            return None
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), _DIR_MASK)
        if wd < 0:
            e = ctypes.get_errno()
            if e != errno.ENOENT:
                log("inotify_watch_failed", path=str(path), error=os.strerror(e))
            return None
        t = next(self._tokens)
        self._watches.setdefault(wd, {})[t] = callback
        return wd, t

    def unwatch(self, watch):
        if watch is None or self._fd is None:
            return
        wd, t = watch
        c = self._watches.get(wd)
        if c is None:
            return
        c.pop(t, None)
        if not c:
            del self._watches[wd]
            _libc.inotify_rm_watch(self._fd, wd)

    def close(self):
        """Idempotent."""
        if self._fd is None:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = None
        self._watches.clear()

    def _on_readable(self):
        try:
            b = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        i = 0
        while i + _EVENT.size <= len(b):
            wd, mask, _, n = _EVENT.unpack_from(b, i)
            name = b[i + _EVENT.size : i + _EVENT.size + n].rstrip(b"\0")
            i += _EVENT.size + n
            if mask & _IN_IGNORED:
                # the directory is gone: its watch with it
                self._watches.pop(wd, None)
                continue
            if mask & _IN_Q_OVERFLOW:
                # events were lost: any file may have changed
                for w in list(self._watches.values()):
                    for c in list(w.values()):
                        c(_IN_MODIFY, None)
                continue
            for c in list(self._watches.get(wd, {}).values()):
                c(mask, name)


class Follower:
    """Hands what is appended to one file to ``on_data(bytes)``, as it is appended.

    Args:
        path (str or Path): the file (it may not exist yet)
        on_data (callable): ``on_data(bytes)``, in the order of the file
        inotify (Inotify): events; None: poll (`POLL_SECS`)
        on_truncated (callable): ``on_truncated()`` before reading a
            truncated file again from its start
        read_bytes (int): most bytes per step
        release (bool): give the disk space of what was read back (the
            file keeps its size and offsets): for a file only we read,
            that nobody reads again
    """

    def __init__(
        self,
        path,
        on_data,
        inotify=None,
        on_truncated=None,
        read_bytes=READ_BYTES,
        release=False,
    ):
        self.path = os.fspath(path)
        self.offset = 0
        self._on_data = on_data
        self._on_truncated = on_truncated
        self._inotify = inotify
        self._read_bytes = read_bytes
        self._name = os.fsencode(os.path.basename(self.path))
        self._fd = None
        self._watch = None
        self._timer = None
        #: the timer is a step scheduled to run soon (not a poll's)
        self._step_due = False
        self._poll_secs = POLL_SECS[0]
        self._closed = False
        self._said_open_failed = False
        self._release = release and _libc is not None
        #: the file's space before this offset was given back
        self._released = 0

    def start(self):
        """Watch first, then read what is there: nothing appended in between is missed."""
        if self._inotify is not None:
            self._watch = self._inotify.watch_dir(
                os.path.dirname(self.path) or ".", self._on_event
            )
        self._step()

    def reread(self, start, end):
        """Bytes `start` to `end` of the file, read again as a read before us
        made them (a re-attach's replay, before `start`); following goes on
        from where they end.

        Returns:
            bytes: fewer than asked if the file is shorter now (or gone)
        """
        if self._fd is None and not self._open():
            return b""
        try:
            b = os.pread(self._fd, max(0, end - start), start)
        except OSError as e:
            log("follow_read_failed", path=self.path, error=str(e))
            return b""
        self.offset = start + len(b)
        return b

    def read_all(self, max_secs=None):
        """Read up to the current end now (a catch-up, or the last read after the writer ended).

        Args:
            max_secs (float): stop after a step that ends past this long
        Returns:
            bool: the end was reached (False: the time ran out first)
        """
        end = None if max_secs is None else time.monotonic() + max_secs
        while self._read(self._read_bytes) >= self._read_bytes:
            if end is not None and time.monotonic() >= end:
                return False
        return True

    def unread_bytes(self):
        """How far the file's end is past the offset (0 if it is not open)."""
        if self._fd is None:
            return 0
        try:
            return max(0, os.fstat(self._fd).st_size - self.offset)
        except OSError:
            return 0

    def skip(self, tail_bytes):
        """Go on at the file's last `tail_bytes`, not reading what is before them.

        Returns:
            int: the new offset, or None if no more than that was left
        """
        n = self.unread_bytes()
        if n <= tail_bytes:
            return None
        self.offset += n - tail_bytes
        return self.offset

    def close(self):
        """Stop following; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inotify is not None:
            self._inotify.unwatch(self._watch)
        self._watch = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_fd()

    def _on_event(self, mask, name):
        """`name` None: an event may have been lost (read anyway)."""
        if self._closed or name not in (self._name, None):
            return
        if mask & _GONE and self._fd is not None:
            # rotated or removed: what was written to it is still ours
            self.read_all()
            self._close_fd()
        if not self._step_due:
            # a step soon, not now: a writer's burst of events is one step,
            # and the loop turns between steps however fast it writes
            if self._timer is not None:
                self._timer.cancel()
            self._step_due = True
            self._timer = asyncio.get_running_loop().call_soon(self._step)

    def _step(self):
        """Read a step's worth; schedule the next step (more to read, or the poll)."""
        self._step_due = False
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        n = self._read(self._read_bytes)
        loop = asyncio.get_running_loop()
        if n >= self._read_bytes:
            self._step_due = True
            self._timer = loop.call_soon(self._step)
        elif self._watch is None:
            # no events: poll, sooner after data
            self._poll_secs = (
                POLL_SECS[0] if n else min(self._poll_secs * 2, POLL_SECS[1])
            )
            self._timer = loop.call_later(self._poll_secs, self._step)

    def _read(self, max_bytes):
        """Read at most `max_bytes` from the offset; returns how many were read."""
        if self._fd is None and not self._open():
            return 0
        try:
            if os.fstat(self._fd).st_size < self.offset:
                self.offset = 0
                if self._on_truncated:
                    self._on_truncated()
            b = os.pread(self._fd, max_bytes, self.offset)
        except OSError as e:
            log("follow_read_failed", path=self.path, error=str(e))
            return 0
        if b:
            self.offset += len(b)
            self._on_data(b)
            if self._release and self.offset - self._released >= RELEASE_BYTES:
                self._give_back()
        elif self._watch is None and self._replaced():
            # polling: a rotation shows only as another file under the name
            self._close_fd()
        return len(b)

    def _give_back(self):
        n = self.offset - self.offset % RELEASE_BYTES
        m = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _libc.fallocate(self._fd, m, self._released, n - self._released) != 0:
            # not on this filesystem: keep it all
            self._release = False
        self._released = n

    def _open(self):
        try:
            # punching holes needs a file open for writing
            m = os.O_RDWR if self._release else os.O_RDONLY
            # a run's code owns its directory: never through a symlink it put
            # there (the agent may be root), nor a FIFO or a device
            fd = os.open(self.path, m | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as e:
            self._open_failed(str(e))
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self._open_failed("not a regular file")
            return False
        os.set_blocking(fd, True)
        self._fd = fd
        self.offset = 0
        self._released = 0
        return True

    def _open_failed(self, why):
        if not self._said_open_failed:
            # once: a file left as it is would say it at every event
            self._said_open_failed = True
            log("follow_open_failed", path=self.path, error=why)

    def _replaced(self):
        try:
            return os.lstat(self.path).st_ino != os.fstat(self._fd).st_ino
        except OSError:
            return True

    def _close_fd(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
