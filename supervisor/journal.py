"""The store's journal: many documents made durable by one fsync.

`supervisor.store` appends every batch of saves and deletes to a journal
file, ``db/.journal.N``, and makes that one append durable
(`Journal.append`: one write, one fdatasync), then writes the documents
themselves without syncing them. A crash may leave those files old or,
before their data reached the disk, empty; the journal has their content.
Every few seconds the store starts a new journal file (`Journal.rotate`)
and, on a thread of its own while appends go on, `Journal.checkpoint`
syncs the documents of the old one (one ``syncfs`` of the filesystem, or
each file where there is no syncfs) and removes it. At start, `replay`
writes every document the journal files hold again, durably, in order, and
removes them: the store then holds what it held when the last append was
durable.

A record: length and CRC-32 of its body (network order), then the body: one
byte (1 save, 0 delete), the key's length (2 bytes), the key, the content.
An append that fails (a full disk) is cut off again, so the journal never
holds a torn record before good ones; a torn record at the end (a crash
mid-append, never acknowledged) ends the replay.
"""

import ctypes
import os
import struct
import zlib

from pykern.pkdebug import pkdlog

NAME = ".journal"

_HEAD = struct.Struct("!II")
_KEY = struct.Struct("!BH")


def record(key, data):
    """The bytes of one save (`data`: bytes) or delete (`data` None) of `key`."""
    k = key.encode()
    b = _KEY.pack(0 if data is None else 1, len(k)) + k + (data or b"")
    return _HEAD.pack(len(b), zlib.crc32(b)) + b


def records(buf):
    """(key, data or None) of each whole, intact record in `buf`, in order."""
    i = 0
    while i + _HEAD.size <= len(buf):
        n, crc = _HEAD.unpack_from(buf, i)
        b = buf[i + _HEAD.size : i + _HEAD.size + n]
        if len(b) < n or zlib.crc32(b) != crc or n < _KEY.size:
            if i + _HEAD.size + n < len(buf):
                pkdlog("journal: bad record offset={} of {}: rest ignored", i, len(buf))
            return
        op, m = _KEY.unpack_from(b)
        yield b[_KEY.size : _KEY.size + m].decode(), (
            bytes(b[_KEY.size + m :]) if op else None
        )
        i += _HEAD.size + n


def _syncfs():
    """libc's syncfs(2), or None where there is none (then files one by one)."""
    try:
        f = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int]
    return f


_SYNCFS = _syncfs()


class Period:
    """A journal file no longer appended to, and the documents written in it."""

    def __init__(self, path, keys):
        self.path = path
        self.keys = keys


class Journal:
    """The journal files (``.journal.N``) of a store whose documents are under `root`.

    Appends go to the newest file; `rotate` starts a new one and hands back
    the old (a `Period`), which `checkpoint` (on another thread, while
    appends go on) makes redundant: its documents synced, it is removed.
    """

    def __init__(self, root, write_doc, delete_doc):
        self._root = root
        self._write_doc = write_doc
        self._delete_doc = delete_doc
        self._fd = None
        self.size = 0
        # documents written since the last rotation: key -> True
        self._unsynced = {}

    def _files(self):
        out = []
        for p in self._root.glob(NAME + ".*"):
            if p.suffix[1:].isdigit():
                out.append((int(p.suffix[1:]), p))
        return sorted(out)

    def replay(self):
        """Write again, durably, what the journal files hold, in order; then
        remove them and open a new one.

        Raises:
            OSError: a record could not be written (a full disk): the
                files stay, for the next start (nothing acknowledged is
                dropped), and the store does not open
        Returns:
            int: records replayed
        """
        n = 0
        fs = self._files()
        failed = None
        for _, p in fs:
            for key, data in records(p.read_bytes()):
                try:
                    if data is None:
                        self._delete_doc(key, True)
                    else:
                        self._write_doc(key, data, True)
                except OSError as e:
                    pkdlog("journal: replay of key={} failed error={}", key, e)
                    failed = failed or e
                n += 1
        if failed is not None:
            raise OSError(
                failed.errno,
                f"the store's journal ({len(fs)} files under {self._root}) could"
                f" not be replayed, kept for the next start: {failed}",
            )
        for _, p in fs:
            p.unlink()
        if fs:
            fsync_dir(self._root)
            pkdlog("journal: replayed records={} files={}", n, len(fs))
        self._open(fs[-1][0] + 1 if fs else 1)
        return n

    def _open(self, number):
        self.path = self._root / f"{NAME}.{number}"
        self._number = number
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600
        )
        # the new file's name is durable before anything depends on it
        fsync_dir(self._root)
        self.size = 0

    def append(self, data):
        """Append `data` (records) durably, or raise with the journal as it was."""
        was = self.size
        try:
            with memoryview(data) as m:
                while m:
                    m = m[os.write(self._fd, m) :]
            os.fdatasync(self._fd)
        except BaseException:
            # a short write (a full disk) must not leave a torn record that
            # would end the replay before later, good ones
            try:
                os.ftruncate(self._fd, was)
            except OSError as e:
                pkdlog("journal: cut back to size={} failed error={}", was, e)
            raise
        self.size = was + len(data)

    def written(self, key):
        """`key`'s document was written (or deleted) after a durable append."""
        self._unsynced[key] = True

    def rotate(self):
        """Append to a new file from now on; the old one's `Period`."""
        p = Period(self.path, self._unsynced)
        self._unsynced = {}
        os.close(self._fd)
        self._fd = None
        self._open(self._number + 1)
        return p

    def checkpoint(self, periods, path):
        """Make the documents of `periods` (oldest first) durable
        (`path(key)`: a document's path), then remove their files, oldest
        first and durably: an old one must never be replayed after a newer
        one is gone (a failed checkpoint's period comes again with the next)."""
        if _SYNCFS is not None:
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                # one call for every document of the period (and whatever
                # else the filesystem holds unsynced)
                if _SYNCFS(fd) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, os.strerror(e))
            finally:
                os.close(fd)
        else:
            _sync_each(self._root, (path(k) for p in periods for k in p.keys))
        for p in periods:
            p.path.unlink(missing_ok=True)
            fsync_dir(self._root)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sync_each(root, paths):
    """fsync each file that is there, and the directories up to `root`."""
    dirs = set()
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            # deleted: its directory entry is what must be durable
            pass
        else:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        d = p.parent
        while d not in dirs:
            dirs.add(d)
            if d == root:
                break
            d = d.parent
    for d in dirs:
        try:
            fsync_dir(d)
        except FileNotFoundError:
            pass


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
