"""Library files of sbatch runs: fetched from the supervisor into a cache, once.

A run op may name library files (``library``: ``[{name, sha256, size}]``,
`supervisor.library`). The login node has no view of the supervisor's
disk, so before its job script is written the agent makes sure each is in
its cache on the shared filesystem (``<work_dir>/library/<sha256>``, the
user's own) and hard-links it, read-only, into the run directory under
``name``. A file already cached costs no transfer.

A missing one is fetched over the agent's websocket: requests of
`CHUNK_BYTES` (``library_want``: sha256, offset, length), at most `WINDOW`
in flight, each answered by a ``library_data`` (base64) that is written and
hashed in order as it comes to ``<sha256>.part``: no file is ever held in
memory, on either side. The whole must hash to its name, or the part is
removed and the run ends ``error`` saying so. A dropped connection fails
the requests in flight; the fetch waits for the next connection and goes on
from what the part holds (hashing that first). Codes on a login node (or
in a Docker volume) run as the user, who owns the cache: a code may make
its linked file writable, change it, and set its modification time back
(or write any stamp file beside it). So a cached file is used as it is
only if its size, inode and change time (which no code can set back) are
what this agent saw when it last linked it, kept in memory; else (changed
since, or its first use by this agent) it is hashed again, and fetched
again if it does not hash to its name. Its mode is set read-only each time.
A code still running with the file linked in can change it under a later
run: runs that must not share a file's bytes need copies of their own.
"""

import asyncio
import base64
import collections
import hashlib
import os
import pathlib
import stat
import time

from agent.log import log

#: bytes per request
CHUNK_BYTES = 1024 * 1024
#: requests in flight at most (`CHUNK_BYTES` each)
WINDOW = 4
#: a request unanswered this long fails (the fetch then starts over from the part)
REQUEST_SECS = 120.0
#: progress is told at most this often
PROGRESS_SECS = 0.5


class StagingError(Exception):
    """A library file could not be staged: the run's error says why."""


class Requests:
    """The agent's side of ``library_want``/``library_data``.

    Args:
        send (callable): ``send(kind, **fields)``; False when not connected
    """

    def __init__(self, send):
        self._send = send
        self._ids = iter(range(1, 2**62))
        # req_id -> future of the bytes
        self._pending = {}
        #: set while connected and welcomed
        self.connected = asyncio.Event()

    def want(self, run_id, sha256, offset, length):
        """A future of `length` bytes of blob `sha256` at `offset`."""
        f = asyncio.get_running_loop().create_future()
        i = next(self._ids)
        if not self.connected.is_set() or not self._send(
            "library_want",
            req_id=i,
            run_id=run_id,
            sha256=sha256,
            offset=offset,
            length=length,
        ):
            f.set_exception(ConnectionError("not connected"))
            return f
        self._pending[i] = f
        return f

    def data(self, msg):
        """A ``library_data`` message."""
        f = self._pending.pop(msg["req_id"], None)
        if f is None or f.done():
            return
        if msg.get("error"):
            f.set_exception(StagingError(msg["error"]))
            return
        try:
            f.set_result(base64.b64decode(msg.get("data") or "", validate=True))
        except ValueError as e:
            f.set_exception(StagingError(f"bad data from the supervisor: {e}"))

    def up(self):
        self.connected.set()

    def down(self):
        """The connection closed: what was in flight is asked again later."""
        self.connected.clear()
        p, self._pending = self._pending, {}
        for f in p.values():
            if not f.done():
                f.set_exception(ConnectionError("connection closed"))


async def stage_run(cache, run, emit):
    """Stage `run`'s library files (`Cache.stage`), telling progress as
    ``run.staging`` (``emit(run, "staging")``); why it failed, or None."""
    if not run.op.get("library"):
        return None
    if cache is None:
        return "library files cannot be fetched by this agent (no connection)"

    def progress(name, done, total):
        run.staging = {"file": name, "done": done, "total": total}
        emit(run, "staging")

    try:
        await cache.stage(run, progress)
    except (StagingError, OSError) as e:
        return str(e)
    return None


class Cache:
    """The user's cache of library files on the login node.

    Args:
        path (Path): its directory (created 0700)
        requests (Requests): how bytes are asked for
    """

    def __init__(self, path, requests):
        self.path = pathlib.Path(path)
        self._requests = requests
        #: bytes fetched since start (a cached file adds nothing)
        self.fetched_bytes = 0
        # sha256 -> `_stamp` of the cached file when this agent last linked
        # it: in memory, where no code can write
        self._linked = {}
        # (st_dev, st_ino) -> size of the parts being fetched
        self._parts = {}

    async def stage(self, run, on_progress):
        """Every library file of `run` into the cache, then linked into its directory.

        Args:
            on_progress (callable): ``on_progress(name, done, total)`` as bytes come
        Raises:
            StagingError: one could not be fetched or did not hash to its name
        """
        for x in run.op.get("library") or ():
            p = await self._ensure(run.run_id, x, on_progress)
            d = run.dir / x["name"]
            if d.exists() or d.is_symlink():
                d.unlink()
            os.link(p, d)
            st = os.stat(p)
            self._linked[x["sha256"]] = _stamp(st)
            # its bytes are the library's, not the run directory's (`agent.space`)
            run.staged_inodes[(st.st_dev, st.st_ino)] = st.st_size

    async def _ensure(self, run_id, item, on_progress):
        sha, size = item["sha256"], item["size"]
        p = self.path / sha
        if await asyncio.get_running_loop().run_in_executor(
            None, self._valid, p, sha, size
        ):
            # a code runs as the user: it may have made it writable
            os.chmod(p, 0o444)
            return p
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = self.path / f"{sha}.part"
        while True:
            try:
                await self._fetch(run_id, item, part, on_progress)
                break
            except ConnectionError as e:
                log("staging_interrupted", run_id=run_id, sha256=sha, error=str(e))
                await self._requests.connected.wait()
        os.chmod(part, 0o444)
        os.replace(part, p)
        return p

    async def _fetch(self, run_id, item, part, on_progress):
        """Fetch the rest of `item` into `part`, hashed in order."""
        sha, size = item["sha256"], item["size"]
        loop = asyncio.get_running_loop()
        h = hashlib.sha256()
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        inflight = collections.deque()
        st = os.fstat(fd)
        k = (st.st_dev, st.st_ino)
        self._parts[k] = size
        try:
            have = await loop.run_in_executor(None, _hash_fd, fd, h, size)
            os.ftruncate(fd, have)
            os.lseek(fd, have, os.SEEK_SET)
            asked = have
            told = 0.0
            while have < size:
                while asked < size and len(inflight) < WINDOW:
                    n = min(CHUNK_BYTES, size - asked)
                    inflight.append((n, self._requests.want(run_id, sha, asked, n)))
                    asked += n
                n, f = inflight.popleft()
                try:
                    b = await asyncio.wait_for(f, REQUEST_SECS)
                except asyncio.TimeoutError:
                    raise ConnectionError("no answer from the supervisor") from None
                if len(b) != n:
                    raise StagingError(
                        f"library file {item['name']}: {len(b)} bytes came for "
                        f"{n} (its size changed?)"
                    )
                os.write(fd, b)
                h.update(b)
                have += n
                self.fetched_bytes += n
                if time.monotonic() - told >= PROGRESS_SECS or have == size:
                    told = time.monotonic()
                    on_progress(item["name"], have, size)
            os.fsync(fd)
        finally:
            self._parts.pop(k, None)
            for _, f in inflight:
                f.cancel()
            os.close(fd)
        if h.hexdigest() != sha:
            os.unlink(part)
            raise StagingError(
                f"library file {item['name']}: its bytes did not hash to "
                f"{sha} on arrival (got {h.hexdigest()}): not used"
            )

    def held(self):
        """What the cache holds for the library, not for any run's room
        (`agent.space`): ``{(st_dev, st_ino): size at most}`` of the files
        this agent verified and linked, and of the parts it is fetching."""
        res = {(x[1], x[2]): x[0] for x in self._linked.values()}
        res.update(self._parts)
        return res

    def _valid(self, path, sha, size):
        """Does `path` hold the bytes of `sha`? Unchanged since this agent
        linked it (size, inode, change time), or hashed again; blocking."""
        try:
            # a code may have put a symlink or a FIFO there
            fd = os.open(
                path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            )
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return False
            if self._linked.get(sha) == _stamp(st):
                return True
            h = hashlib.sha256()
            return _hash_fd(fd, h, size) == size and h.hexdigest() == sha
        finally:
            os.close(fd)


def _stamp(st):
    return (st.st_size, st.st_dev, st.st_ino, st.st_ctime_ns)


def _hash_fd(fd, h, size):
    """Hash what `fd` holds (at most `size` bytes); how many there are."""
    n = 0
    while n < size:
        b = os.pread(fd, min(CHUNK_BYTES, size - n), n)
        if not b:
            break
        h.update(b)
        n += len(b)
    return n
