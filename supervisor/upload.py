"""One upload to the file library on its way in (`library`), streamed to disk.

The loop gathers the body's chunks; each `FLUSH_BYTES` of them are hashed
and written by the upload's own thread (in order) while the loop takes the
next. `Upload.write` returns the future of the flush before: a caller that
awaits it holds at most two flushes of the body in memory and reads no
faster than the disk and the hash go. A write that fails (a full disk)
stops the upload at the next chunk, or at its end.
"""

import asyncio
import concurrent.futures
import os

from pykern.pkdebug import pkdlog

from supervisor import errors

#: an upload's bytes are hashed and written in pieces of this
FLUSH_BYTES = 1024 * 1024


class Upload:
    """One upload on its way in: written to its partial file as it comes.

    The loop gathers the body's chunks; each `FLUSH_BYTES` of them are hashed
    and written by the upload's own thread (in order), while the loop takes
    the next: `write` returns the future of the flush before (a caller that
    awaits it holds at most two flushes of the body in memory, and reads no
    faster than the disk and the hash go).
    """

    def __init__(self, library, user, name, path, offset, length, digest, exact=True):
        self._library = library
        self.user = user
        self.name = name
        self.path = path
        #: bytes received so far (those of an earlier try included)
        self.received = offset
        #: the whole file's size (from the headers), or (not `exact`) its most
        self.length = length
        self._exact = exact
        self.sha = digest
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._buf = []
        self._buffered = 0
        # one thread per upload: its writes in order, off the loop
        self._ex = concurrent.futures.ThreadPoolExecutor(1, "upload")
        self._flushing = None

    def write(self, chunk):
        """More of the body; TooLarge past the declared length.

        Returns:
            asyncio.Future: of the flush before, if it is still going (the
            caller awaits it before it reads more), or None
        """
        if self.received + len(chunk) > self.length:
            if not self._exact:
                raise errors.TooLarge(
                    "quota_exceeded",
                    f"the file is over the {self.length} bytes your plan's "
                    "library has room for",
                )
            raise errors.TooLarge(
                "body_too_large",
                f"the body is over the {self.length} bytes its headers declared",
            )
        self._buf.append(chunk)
        self._buffered += len(chunk)
        self.received += len(chunk)
        if self._buffered < FLUSH_BYTES:
            return None
        before = self._flushing
        if before is not None and before.done() and before.exception():
            # a write that failed (a full disk): nothing more is taken
            raise before.exception()
        self._flush()
        return before if before is not None and not before.done() else None

    def _flush(self):
        if not self._buf:
            return
        b = b"".join(self._buf)
        self._buf = []
        self._buffered = 0
        # the fd as it is now: a close may be queued behind this write
        self._flushing = asyncio.get_running_loop().run_in_executor(
            self._ex, self._write, self._fd, b
        )
        self._flushing.add_done_callback(self._flushed)

    def _write(self, fd, b):
        self.sha.update(b)
        v = memoryview(b)
        while v:
            v = v[os.write(fd, v) :]

    def _flushed(self, f):
        if not f.cancelled() and f.exception() is not None:
            # the caller that awaits it says so; one that dropped it logs it
            pkdlog("upload={} write failed error={}", self.path, f.exception())

    def suspend(self):
        """The connection dropped: what arrived stays, for a resume."""
        if self._fd is not None:
            self._flush()
        self._close()

    async def finish(self):
        """The body is in: the entry (a dict), once its bytes are a blob."""
        if not self._exact:
            self.length = self.received
        if self.received != self.length:
            self.suspend()
            raise errors.BadInput(
                "incomplete_upload",
                f"{self.received} of {self.length} bytes arrived: send the rest "
                f"with Upload-Offset: {self.received}",
            )
        self._flush()
        loop = asyncio.get_running_loop()
        try:
            if self._flushing is not None:
                # the last write (each before it was awaited or checked)
                await self._flushing
            await loop.run_in_executor(self._ex, os.fsync, self._fd)
        finally:
            self._close()
        return await self._library.commit(self, self.sha.hexdigest())

    def _close(self):
        """After the writes queued (the thread closes the file, then ends)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._ex.submit(os.close, fd)
            self._ex.shutdown(wait=False)


def hash_file(path, sha):
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            sha.update(b)
