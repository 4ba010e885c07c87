"""The json-store: durable documents under the data directory.

The supervisor is the only writer. Every write is atomic and durable: a
crash at any point leaves the old or the new document, never a torn one.
Saves are made durable in batches (`supervisor.journal`): whatever was saved
while the writer was busy goes to the journal in one append and one fsync,
then each document is written (temp file, rename) without a sync of its
own; every few seconds a checkpoint syncs the documents written since
(each once) and empties the journal, and a start replays it. A document
saved five times in a run's life costs five records and at most one sync.

Writes happen on one background thread, in order, so the event loop never
waits on a disk. Saves of the same document coalesce: while a write is queued
only the newest content is kept, and every caller's future resolves once that
content (or a newer one) is durable and in its file.

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

import msgspec
from pykern.pkdebug import pkdlog

from supervisor import journal

_TMP_SUFFIX = ".tmp"

#: documents as compact JSON (msgspec: several times faster
#: than the json module, which made most of a run's supervisor CPU)
_ENCODER = msgspec.json.Encoder()

#: first wait before dirty documents are written again; it doubles up to the max
_RETRY_FIRST_SECS = 0.1
_RETRY_MAX_SECS = 5.0

#: the journal is emptied (its documents synced) after this long or size
CHECKPOINT_SECS = 5.0
CHECKPOINT_BYTES = 16 << 20


def _tmp_name(name):
    """The temporary file's name of document `name`: within the 255 bytes of
    a file name, however long `name` is (an upload's may have 255 itself)."""
    b = os.fsencode(name)
    if len(b) + len(_TMP_SUFFIX) > 255:
        name = "." + hashlib.sha256(b).hexdigest()
    return name + _TMP_SUFFIX


def write_atomic(path, data, before_rename=None, sync=True):
    """Write `data` (bytes) to `path` atomically and (`sync`) durably.

    Args:
        path (pathlib.Path): the document
        data (bytes): its new content
        before_rename (callable): test hook, called after the temp file is
            durable and before it replaces the document
        sync (bool): False: no fsync (the store's journal has the content)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    t = path.with_name(_tmp_name(path.name))
    fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            _write_all(fd, data)
            if sync:
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
    if sync:
        journal.fsync_dir(path.parent)


def _write_all(fd, data):
    """All of `data` (a short write is what a filling disk does first)."""
    with memoryview(data) as m:
        while m:
            m = m[os.write(fd, m) :]


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
        # the batch being filled (key -> [bytes or None (delete), [futures]]),
        # which the thread takes whole; None: the next save opens one
        self._open = None
        # key -> bytes or None: newest content whose write failed (the thread
        # writes it; the loop reads its size)
        self._dirty = {}
        # key -> True: files appended outside the writer (a run's frames and
        # log, `sim_store`) that are behind what they should hold
        self._behind = {}
        self._lock = threading.Lock()
        self.writes = 0
        #: journal appends: batches of writes made durable by one fsync
        self.commits = 0
        self.write_secs = 0.0
        self.checkpoint_secs = 0.0
        #: failed write attempts (documents), since start
        self.failures = 0
        #: the last failure, while documents are dirty
        self.last_error = None
        # on the loop: the timer of the next retry, and its wait
        self._retry = None
        self._retry_secs = _RETRY_FIRST_SECS
        self._destroyed = False
        self.journal = journal.Journal(self.root, self._apply, self._apply_delete)
        # what a crash left unsynced: written again, durably, before any load
        self.journal.replay()
        self._checkpoint_at = time.monotonic() + CHECKPOINT_SECS
        # checkpoints run beside the writer, one at a time
        self._checkpointer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="store-checkpoint"
        )
        self._checkpointing = None
        # journal periods to checkpoint (on that thread), oldest first
        self._periods = []
        self.checkpoints = 0

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
        return self._queue(key, _ENCODER.encode(doc))

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
        loop = asyncio.get_running_loop()
        f = loop.create_future()
        with self._lock:
            b = self._open
            if b is None:
                b = self._open = {}
                self._executor.submit(self._flush, b, loop)
            p = b.get(key)
            if p is not None:
                # not yet taken by the thread: newest content wins
                p[0] = data
                p[1].append(f)
            else:
                b[key] = [data, [f]]
        return f

    def _flush(self, batch, loop):
        with self._lock:
            if self._open is batch:
                self._open = None
        e = self._write(batch, loop)
        loop.call_soon_threadsafe(
            _resolve_all, [(p[1], e.get(k)) for k, p in batch.items()]
        )

    def _write(self, batch, loop):
        """Write or delete documents (on the thread): one durable append to
        the journal, then each file. Returns key -> error of those that failed.

        Args:
            batch (dict): key -> [bytes or None (delete), ...], in order
        """
        t = time.perf_counter()
        try:
            self.journal.append(
                b"".join(journal.record(k, p[0]) for k, p in batch.items())
            )
        except Exception as x:
            errs = dict.fromkeys(batch, x)
        else:
            errs = {}
            for k, p in batch.items():
                try:
                    if p[0] is None:
                        self._apply_delete(k)
                    else:
                        self._apply(k, p[0])
                except Exception as x:
                    errs[k] = x
                self.journal.written(k)
        self.writes += len(batch)
        self.commits += 1
        # what this wrote is newer than any failed content of the key
        for k, p in batch.items():
            self._note(k, errs.get(k), p[0])
        if errs:
            loop.call_soon_threadsafe(self._schedule_retry, loop)
        if (
            time.monotonic() >= self._checkpoint_at
            or self.journal.size >= CHECKPOINT_BYTES
        ):
            self._start_checkpoint()
        self.write_secs += time.perf_counter() - t
        return errs

    def _apply(self, key, data, sync=False):
        write_atomic(self.path(key), data, sync=sync)

    def _apply_delete(self, key, sync=False):
        p = self.path(key)
        p.unlink(missing_ok=True)
        if sync and p.parent.exists():
            journal.fsync_dir(p.parent)

    def _start_checkpoint(self):
        """On the writer: a new journal file; the old one's documents synced
        on the checkpoint thread (unless one is under way: later)."""
        c = self._checkpointing
        if c is not None and not c.done():
            return None
        self._checkpoint_at = time.monotonic() + CHECKPOINT_SECS
        try:
            p = self.journal.rotate()
        except OSError as e:
            # appends go on to the old file until a rotation succeeds
            pkdlog("store: journal rotation failed error={}", e)
            return None
        self._checkpointing = self._checkpointer.submit(self._checkpoint, p)
        return self._checkpointing

    def _checkpoint(self, period):
        t = time.perf_counter()
        # those whose checkpoint failed go first: never a newer one before
        self._periods.append(period)
        try:
            self.journal.checkpoint(self._periods, self.path)
        except OSError as e:
            # the files stay: replayed at start if never checkpointed
            pkdlog("store: checkpoint failed error={}", e)
            return
        self._periods = []
        self.checkpoints += 1
        self.checkpoint_secs += time.perf_counter() - t

    def _sync_all(self):
        """On the writer, at stop: checkpoint what the journal holds, now."""
        c = self._checkpointing
        if c is not None:
            c.result()
        c = self._start_checkpoint()
        if c is not None:
            c.result()

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
            o = self._open or {}
            todo = {k: [d] for k, d in self._dirty.items() if k not in o}
        if todo and self._write(todo, loop):
            # the disk is still full: the next try after a longer wait (a
            # newer save meanwhile made its key's content moot: `_note`)
            return
        loop.call_soon_threadsafe(self._retried)

    def _retried(self):
        if not self.dirty():
            self._retry_secs = _RETRY_FIRST_SECS

    def call(self, fn, *args, barrier=True):
        """Run `fn` on the writer thread, in order with the writes.

        Args:
            barrier (bool): saves after this call land after it (they do not
                join a batch queued before it); False: they may come first
                (a removal whose order with later saves does not matter,
                so many of them do not split the writes in batches)
        """
        if barrier:
            with self._lock:
                # saves after this call must not join writes queued before it
                self._open = None
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    async def flush(self):
        """Wait for every queued write, try the dirty ones once more and sync
        what the journal holds (shutdown)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._write_dirty, loop)
        await loop.run_in_executor(self._executor, self._sync_all)
        if n := self.dirty():
            pkdlog("store: documents not written at stop dirty={}", n)

    def destroy(self):
        self._destroyed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._executor.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self.journal.close()


def _resolve_all(outcomes):
    for futures, error in outcomes:
        _resolve(futures, error)


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
