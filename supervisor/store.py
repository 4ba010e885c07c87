"""The json-store: durable documents under the data directory.

The supervisor is the only writer. Every write is atomic and durable: write a
temp file, fsync it, rename it over the document, fsync the directory; a crash
at any point leaves the old or the new document, never a torn one.

Writes happen on one background thread, in order, so the event loop never
waits on a disk. Saves of the same document coalesce: while a write is queued
only the newest content is kept, and every caller's future resolves once that
content (or a newer one) is on disk.
"""

import asyncio
import concurrent.futures
import json
import os
import pathlib
import threading
import time

from pykern.pkdebug import pkdlog

_TMP_SUFFIX = ".tmp"


def write_atomic(path, data, before_rename=None):
    """Write `data` (bytes) to `path` atomically and durably.

    Args:
        path (pathlib.Path): the document
        data (bytes): its new content
        before_rename (callable): test hook, called after the temp file is
            durable and before it replaces the document
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    t = path.with_name(path.name + _TMP_SUFFIX)
    fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if before_rename:
        before_rename()
    os.replace(t, path)
    _fsync_dir(path.parent)


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
        self._lock = threading.Lock()
        self.writes = 0
        self.write_secs = 0.0

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
        t = time.perf_counter()
        e = None
        try:
            if p[0] is None:
                self.path(key).unlink(missing_ok=True)
            else:
                write_atomic(self.path(key), p[0])
        except Exception as x:
            pkdlog("store write failed key={} error={}", key, x)
            e = x
        self.writes += 1
        self.write_secs += time.perf_counter() - t
        loop.call_soon_threadsafe(_resolve, p[1], e)

    def call(self, fn, *args):
        """Run `fn` on the writer thread, in order with the writes."""
        with self._lock:
            # saves after this call must not join writes queued before it
            self._pending.clear()
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    async def flush(self):
        """Wait for every queued write (shutdown)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)

    def destroy(self):
        self._executor.shutdown(wait=True)


def _resolve(futures, error):
    for f in futures:
        if f.done():
            continue
        if error:
            f.set_exception(error)
        else:
            f.set_result(None)
