"""The json-store: durable documents under the data directory.

The supervisor is the only writer. Every write is atomic and durable: write a
temp file, fsync it, rename it over the document, fsync the directory; a crash
at any point leaves the old or the new document, never a torn one.

Writes happen on one background thread, in order, so the event loop never
waits on a disk. Saves of the same document coalesce: while a write is queued
only the newest content is kept, and every caller's future resolves once that
content (or a newer one) is on disk.

A write that fails (a full disk, an I/O error, a read-only directory)
rejects its callers' futures, but its content is not dropped: the document
stays dirty and is written again with backoff (or by a newer save) until it
lands. Meanwhile `health` says so, `failures` counts the attempts, and the
first failure is logged once, the recovery once. A failed write never leaves
a partial file: the temp file is removed, the old document stays.
"""

import asyncio
import concurrent.futures
import json
import hashlib
import os
import pathlib
import threading
import time

from pykern.pkdebug import pkdlog

_TMP_SUFFIX = ".tmp"

#: first wait before dirty documents are written again; it doubles up to the max
_RETRY_FIRST_SECS = 0.1
_RETRY_MAX_SECS = 5.0


def _tmp_name(name):
    """The temporary file's name of document `name`: within the 255 bytes of
    a file name, however long `name` is (an upload's may have 255 itself)."""
    b = os.fsencode(name)
    if len(b) + len(_TMP_SUFFIX) > 255:
        name = "." + hashlib.sha256(b).hexdigest()
    return name + _TMP_SUFFIX


def write_atomic(path, data, before_rename=None):
    """Write `data` (bytes) to `path` atomically and durably.

    Args:
        path (pathlib.Path): the document
        data (bytes): its new content
        before_rename (callable): test hook, called after the temp file is
            durable and before it replaces the document
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    t = path.with_name(_tmp_name(path.name))
    fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename:
            before_rename()
        os.replace(t, path)
    except BaseException:
        # a full disk writes short or fails: no partial temp is left behind
        t.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_all(fd, data):
    """All of `data` (a short write is what a filling disk does first)."""
    with memoryview(data) as m:
        while m:
            m = m[os.write(fd, m) :]


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path):
    """Read a document; None if it does not exist."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


class Store:
    """Documents by path relative to ``<data_dir>/db``."""

    def __init__(self, data_dir):
        self.root = pathlib.Path(data_dir).resolve() / "db"
        self.root.mkdir(parents=True, exist_ok=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="store"
        )
        # key -> [bytes or None (delete), [futures]]: written by the thread
        self._pending = {}
        # key -> bytes or None: newest content whose write failed (the thread
        # writes it; the loop reads its size)
        self._dirty = {}
        # key -> True: files appended outside the writer (a run's frames and
        # log, `sim_store`) that are behind what they should hold
        self._behind = {}
        self._lock = threading.Lock()
        self.writes = 0
        self.write_secs = 0.0
        #: failed write attempts (documents), since start
        self.failures = 0
        #: the last failure, while documents are dirty
        self.last_error = None
        # on the loop: the timer of the next retry, and its wait
        self._retry = None
        self._retry_secs = _RETRY_FIRST_SECS
        self._destroyed = False

    def path(self, key):
        # keys are made by the supervisor from checked ids; refuse anything
        # that could leave the store without a syscall per component
        assert (
            key and not key.startswith("/") and ".." not in key.split("/")
        ), f"key={key} escapes the store"
        return self.root / key

    def load_all(self, subdir):
        """Every document under `subdir`, as (key, doc); removes stale temps."""
        d = self.root / subdir
        if not d.exists():
            return []
        res = []
        for p in sorted(d.rglob("*")):
            if p.name.endswith(_TMP_SUFFIX):
                # a crash before rename: the document itself is intact
                p.unlink()
                continue
            if p.suffix == ".json" and p.is_file():
                try:
                    res.append(
                        (str(p.relative_to(self.root)), json.loads(p.read_bytes()))
                    )
                except ValueError as e:
                    pkdlog("unreadable document={} error={}", p, e)
        return res

    def save(self, key, doc):
        """Queue a durable write of `doc`; returns a future done when it is on disk."""
        return self._queue(key, json.dumps(doc, indent=1, sort_keys=True).encode())

    def delete(self, key):
        return self._queue(key, None)

    def dirty(self):
        """How many documents are not on disk as they should be (failed writes)."""
        with self._lock:
            return len(self._dirty) + len(self._behind)

    def behind(self, key, error):
        """A file under the store appended elsewhere failed (`sim_store`).

        It counts as dirty, in `health` and the metrics, until `caught_up`.
        """
        self._note(key, error, behind=True)

    def caught_up(self, key):
        self._note(key, None, behind=True)

    def health(self):
        """None if every write landed, else why not (a sentence)."""
        n = self.dirty()
        if not n:
            return None
        return f"{n} documents not written yet (retrying): {self.last_error}"

    def _queue(self, key, data):
        f = asyncio.get_running_loop().create_future()
        with self._lock:
            p = self._pending.get(key)
            if p is not None:
                # not yet taken by the thread: newest content wins
                p[0] = data
                p[1].append(f)
                return f
            p = self._pending[key] = [data, [f]]
        self._executor.submit(self._flush, key, p, asyncio.get_running_loop())
        return f

    def _flush(self, key, p, loop):
        with self._lock:
            if self._pending.get(key) is p:
                del self._pending[key]
        e = self._write(key, p[0], loop)
        loop.call_soon_threadsafe(_resolve, p[1], e)

    def _write(self, key, data, loop):
        """Write or delete one document (on the thread); returns the error or None."""
        t = time.perf_counter()
        e = None
        try:
            if data is None:
                self.path(key).unlink(missing_ok=True)
            else:
                write_atomic(self.path(key), data)
        except Exception as x:
            e = x
        self.writes += 1
        self.write_secs += time.perf_counter() - t
        # what this wrote is newer than any failed content of the key
        self._note(key, e, data)
        if e is not None:
            loop.call_soon_threadsafe(self._schedule_retry, loop)
        return e

    def _note(self, key, error, data=None, behind=False):
        """Count a write's outcome (any thread); log a bad spell's start and end."""
        with self._lock:
            was = len(self._dirty) + len(self._behind)
            t = self._behind if behind else self._dirty
            if error is None:
                t.pop(key, None)
            else:
                t[key] = True if behind else data
                self.failures += 1
                self.last_error = f"{type(error).__name__}: {error}"
            now = len(self._dirty) + len(self._behind)
            # logged under the lock: whoever sees dirty() at 0 sees the line
            if error is not None and not was:
                # once per bad spell, not once per document or attempt
                pkdlog(
                    "store write failed key={} error={}; retrying with backoff",
                    key,
                    self.last_error,
                )
            elif was and not now:
                pkdlog("store writes recovered failures={}", self.failures)

    def _schedule_retry(self, loop):
        """On the loop: write the dirty documents again after a backoff."""
        if self._retry is not None or self._destroyed:
            return
        self._retry = loop.call_later(self._retry_secs, self._submit_retry, loop)
        self._retry_secs = min(self._retry_secs * 2, _RETRY_MAX_SECS)

    def _submit_retry(self, loop):
        self._retry = None
        if not self._destroyed:
            self._executor.submit(self._write_dirty, loop)

    def _write_dirty(self, loop):
        """On the thread: the dirty documents, until one fails again."""
        with self._lock:
            todo = [(k, d) for k, d in self._dirty.items() if k not in self._pending]
        for k, d in todo:
            with self._lock:
                if k not in self._dirty or self._dirty[k] is not d:
                    # written (or failed anew) since: that is newer
                    continue
            if self._write(k, d, loop) is not None:
                # the disk is still full: the next try after a longer wait
                return
        loop.call_soon_threadsafe(self._retried)

    def _retried(self):
        if not self.dirty():
            self._retry_secs = _RETRY_FIRST_SECS

    def call(self, fn, *args):
        """Run `fn` on the writer thread, in order with the writes."""
        with self._lock:
            # saves after this call must not join writes queued before it
            self._pending.clear()
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    async def flush(self):
        """Wait for every queued write, and try the dirty ones once more (shutdown)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write_dirty, loop)
        if n := self.dirty():
            pkdlog("store: documents not written at stop dirty={}", n)

    def destroy(self):
        self._destroyed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._executor.shutdown(wait=True)


def _resolve(futures, error):
    for f in futures:
        if f.done():
            continue
        if error:
            f.set_exception(error)
            # handled here (dirty, retried): a caller that does not await
            # its save must not make asyncio log it again at collection
            f.exception()
        else:
            f.set_result(None)
