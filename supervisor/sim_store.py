"""The simulations in memory and on disk: documents, in situ frames and logs.

A simulation belongs to one user: a code, its parameters and its job. Its
document (with the job) is ``db/jobs/<user>/<id>.json``; the current run's
frames and log, as they arrive, are appended to ``<id>.<run_id>.frames.jsonl``
and ``<id>.<run_id>.log`` beside it (a torn last line after a crash is dropped on load, and
the agent sends what is missing when it reconnects). The frames of an active
run are also held in memory, as the JSON lines written; once a run has ended
and its file is on disk, they are read from the file when asked for, so the
supervisor's memory does not grow with what its users store. Outputs live in the run
directory ``run/<user>/<id>/``, written by the agent; its uploaded inputs in
``inputs/<user>/<id>/`` (`files.Files`). What each user stores of all that
is `usage` (counted here as it changes). What may be done to a simulation
(create, edit, delete) is `sims.Sims`; its runs are `runs.Runs`.
"""

import asyncio

import json
import os
import pathlib
import secrets
import shutil
import time

from pykern.pkdebug import pkdlog

from supervisor import errors, job, usage

#: bytes of a run's frames or log held while the disk refuses them
_MAX_BEHIND_BYTES = 8 * 1024 * 1024


class Simulation:
    def __init__(self, doc):
        self.id = doc["id"]
        self.user = doc["user"]
        self.code = doc["code"]
        self.name = doc["name"]
        self.params = doc["params"]
        self.created = doc["created"]
        self.updated = doc.get("updated", self.created)
        self.job = job.Job(doc.get("job"))
        #: ``{id, index}`` of the sweep it is a member of (`sweeps`), or None
        self.sweep = doc.get("sweep")
        # the agent the current run was sent to (re-adoption after a restart)
        self.agent_id = doc.get("agent_id")
        #: the current run's frames as JSON lines (bytes, with the newline);
        #: None: only on disk (an ended run), `job.frames` of them
        self.frames = []
        self.log_chars = 0
        self.log_tail = ""
        # supervisor.run.Run while the job is active (only `Runs` sets it);
        # never persisted
        self.run = None
        self.deleted = False

    def to_dict(self):
        return {
            "id": self.id,
            "user": self.user,
            "code": self.code,
            "name": self.name,
            "params": self.params,
            "created": self.created,
            "updated": self.updated,
            "job": self.job.to_dict(),
            "sweep": self.sweep,
        }

    def pkdebug_str(self):
        return f"Simulation({self.user}/{self.id} {self.job.status})"


class SimStore:
    def __init__(self, cfg, store):
        self._cfg = cfg
        self._store = store
        self.run_root = pathlib.Path(cfg.data_dir).resolve() / "run"
        self.inputs_root = pathlib.Path(cfg.data_dir).resolve() / "inputs"
        #: stored bytes per user (`usage.Usage`)
        self.usage = usage.Usage()
        self.by_id = {}
        # sim id -> open append handles (frames, log) of its current run
        self._files = {}

    def load(self):
        for _, d in self._store.load_all("jobs"):
            s = Simulation(d)
            self.by_id[s.id] = s
            self._load_outputs(s)
            self._measure(s)
        return list(self.by_id.values())

    def _measure(self, sim):
        """What `sim` stores, measured once (at start)."""
        u = self.usage
        u.set(sim.user, sim.id, usage.RUN, usage.dir_bytes(self.run_dir(sim)))
        d = self.inputs_dir(sim)
        for p in sorted(d.iterdir()) if d.is_dir() else ():
            u.set(sim.user, sim.id, usage.input_part(p.name), usage.file_bytes(p))
        if sim.job.run_id:
            for k, x in ((usage.FRAMES, ".frames.jsonl"), (usage.LOG, ".log")):
                u.set(sim.user, sim.id, k, usage.file_bytes(self._path(sim, x)))

    def _load_outputs(self, sim):
        if not sim.job.run_id:
            return
        p = self._path(sim, ".frames.jsonl")
        if sim.job.status in job.ENDED:
            sim.frames = None
            sim.job.frames = _count_lines(p)
        else:
            sim.frames = _load_lines(p)
            sim.job.frames = len(sim.frames)
        try:
            t = self._path(sim, ".log").read_text(errors="replace")
            sim.log_chars = len(t)
            sim.log_tail = t[-self._cfg.log_tail_chars :]
        except FileNotFoundError:
            pass

    def _path(self, sim, suffix, run_id=None):
        """A file of the current run (or of `run_id`)."""
        return self._store.path(
            f"jobs/{sim.user}/{sim.id}.{run_id or sim.job.run_id}{suffix}"
        )

    def _outputs(self, sim):
        return [self._path(sim, x) for x in (".frames.jsonl", ".log")]

    def run_dir(self, sim):
        return self.run_root / sim.user / sim.id

    def inputs_dir(self, sim):
        return self.inputs_root / sim.user / sim.id

    # --- lookup ------------------------------------------------------------

    def get(self, user, sim_id):
        """The simulation if `user` may see it; NotFound otherwise (never 403)."""
        s = self.by_id.get(sim_id) if isinstance(sim_id, str) else None
        if s is None or (s.user != user.name and not user.is_admin()):
            raise errors.NotFound("unknown_simulation", f"no simulation {sim_id}")
        return s

    def for_user(self, name):
        return sorted(
            (s for s in self.by_id.values() if s.user == name),
            key=lambda s: s.created,
        )

    # --- changes -----------------------------------------------------------

    def create(self, user, code, name, params, sweep=None, now=None):
        now = now or time.time()
        s = Simulation(
            {
                "id": secrets.token_hex(6),
                "user": user.name,
                "code": code,
                "name": name,
                "params": params,
                "created": now,
                "sweep": sweep,
            }
        )
        self.by_id[s.id] = s
        return s

    def save(self, sim):
        """Durable write of the document; returns the future of it."""
        d = sim.to_dict()
        d["agent_id"] = sim.agent_id
        return self._store.save(f"jobs/{sim.user}/{sim.id}.json", d)

    def delete(self, sim):
        sim.deleted = True
        self._close(sim)
        del self.by_id[sim.id]
        self.usage.forget(sim.user, sim.id)
        # on the writer thread, after any upload's write queued before: an
        # upload under way when the simulation goes leaves no file behind;
        # the document may go first (a crash between leaves files to
        # collect, not a simulation without them), so a sweep's thousands
        # of deletes are a few journal commits, not one each
        r = self._store.call(
            _remove,
            self._outputs(sim) if sim.job.run_id else (),
            (self.run_dir(sim), self.inputs_dir(sim)),
            barrier=False,
        )
        # done once both are: the files gone and the document's delete durable
        return asyncio.gather(r, self._store.delete(f"jobs/{sim.user}/{sim.id}.json"))

    def new_run(self, sim):
        """Forget the previous run's frames and log (call before job.queue).

        Each run has files of its own, so the old ones are removed off the
        event loop without racing the new run's first writes.
        """
        self._close(sim)
        if sim.job.run_id:
            self._store.call(_unlink, self._outputs(sim))
        self.usage.set(sim.user, sim.id, usage.FRAMES, 0)
        self.usage.set(sim.user, sim.id, usage.LOG, 0)
        sim.frames = []
        sim.log_chars = 0
        sim.log_tail = ""

    def add_frame(self, sim, seq, data):
        """Append frame `seq` if it is the next one; False if a duplicate."""
        n = sim.job.frames
        if seq < n or sim.frames is None:
            # None: the run has ended (a late repeat of its agent)
            return False
        if seq > n:
            pkdlog("{} frame gap seq={} expected={}", sim, seq, n)
        if n >= self._cfg.max_frames:
            return False
        b = json.dumps(data, separators=(",", ":")).encode() + b"\n"
        sim.frames.append(b)
        sim.job.frames = len(sim.frames)
        self._file(sim, 0).append(b)
        self.usage.add(sim.user, sim.id, usage.FRAMES, len(b))
        return True

    def add_log(self, sim, offset, text):
        """Append log text at `offset`; returns what was new ('' if a repeat)."""
        if offset < sim.log_chars:
            text = text[sim.log_chars - offset :]
        if not text:
            return ""
        sim.log_chars += len(text)
        sim.log_tail = (sim.log_tail + text)[-self._cfg.log_tail_chars :]
        b = text.encode()
        self._file(sim, 1).append(b)
        self.usage.add(sim.user, sim.id, usage.LOG, len(b))
        return text

    def end_run(self, sim):
        """The run ended: its files closed, its run directory measured.

        Its frames leave memory once their file is whole on disk.
        """
        run_id = sim.job.run_id
        c = self._close(sim)

        def _closed(f):
            if (
                not f.cancelled()
                and f.exception() is None
                and f.result()
                and sim.job.run_id == run_id
                and sim.frames is not None
                and len(sim.frames) == sim.job.frames
            ):
                sim.frames = None

        if c is not None:
            c.add_done_callback(_closed)
        f = asyncio.get_running_loop().run_in_executor(
            None, usage.dir_bytes, self.run_dir(sim)
        )

        def _measured(f):
            # the simulation may be gone, or running anew, by now
            if f.cancelled() or sim.deleted:
                return
            if e := f.exception():
                pkdlog("{} run dir not measured error={}", sim, e)
                return
            if sim.job.run_id == run_id:
                self.usage.set(sim.user, sim.id, usage.RUN, f.result())

        f.add_done_callback(_measured)

    def _file(self, sim, index):
        f = self._files.get(sim.id)
        if f is None:
            f = self._files[sim.id] = tuple(
                _Appender(self._store, self._path(sim, x), self._key(sim, x))
                for x in (".frames.jsonl", ".log")
            )
        return f[index]

    def _key(self, sim, suffix):
        return f"jobs/{sim.user}/{sim.id}.{sim.job.run_id}{suffix}"

    def _close(self, sim):
        """Close the run's files; the future of that (True: nothing was lost), or None."""
        f = self._files.pop(sim.id, None)
        if f:
            # in order with the documents, before the job that ends the run
            return self._store.call(_fsync_close, f)
        return None

    async def frames_since(self, sim, since):
        """The current run's frames from `since` on, as JSON lines.

        Returns:
            tuple: (lines, how many frames the run has, run id)
        """
        while True:
            run_id, held = sim.job.run_id, sim.frames
            if held is not None or not run_id:
                held = held or []
                return held[since:], len(held), run_id
            p = self._path(sim, ".frames.jsonl")
            rv = await asyncio.to_thread(_read_lines, p, since)
            if sim.job.run_id == run_id:
                return (*rv, run_id)
            # a new run began while the file was read: its frames instead

    def frames_text(self, sim):
        """All of the current run's frames as JSON lines text (blocking if on disk)."""
        if sim.frames is not None:
            return b"".join(sim.frames).decode()
        if not sim.job.run_id:
            return ""
        return b"".join(_read_lines(self._path(sim, ".frames.jsonl"), 0)[0]).decode()

    def destroy(self):
        for i in list(self._files):
            self._close(self.by_id[i])


def _unlink(paths):
    for p in paths:
        p.unlink(missing_ok=True)


def _remove(files, dirs):
    _unlink(files)
    for d in dirs:
        shutil.rmtree(d, True)


def _fsync_close(files):
    """Close each; True if every byte given to them is in its file."""
    whole = True
    for f in files:
        whole = f.close() and whole
    return whole


def _read_lines(path, since):
    """The whole lines of `path` from line `since` on, and how many it has."""
    rv = []
    n = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    # torn by a crash
                    break
                if n >= since:
                    rv.append(line)
                n += 1
    except FileNotFoundError:
        pass
    return rv, n


def _count_lines(path):
    """How many whole lines `path` holds (0 if it is gone); nothing is kept."""
    n = 0
    try:
        with open(path, "rb") as f:
            while b := f.read(1 << 20):
                n += b.count(b"\n")
    except FileNotFoundError:
        pass
    return n


def _load_lines(path):
    """The whole JSON lines of an active run's file; a torn tail is cut off.

    What follows is appended after the kept lines (the agent sends the
    missing frames again), never after a torn one.
    """
    rv = []
    end = 0
    try:
        with open(path, "r+b") as f:
            for line in f:
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("torn")
                    json.loads(line)
                except ValueError:
                    f.truncate(end)
                    break
                rv.append(line)
                end += len(line)
    except FileNotFoundError:
        pass
    return rv


class _Appender:
    """A run's frames or log file, appended to on the loop, whole or not at all.

    What a full disk (or another error) refuses is kept in memory, up to a
    bound, and written before the next append, so the file catches up once
    there is room; a short write is cut back, so no torn line is left. Past
    the bound the file ends with what was held: it is always a prefix of
    the run's frames or log, never one with a hole. The
    store counts it as dirty meanwhile (`store.Store.behind`).
    """

    def __init__(self, store, path, key):
        self._store = store
        self._path = path
        self._key = key
        self._file = None
        self._behind = b""
        # bytes were dropped: nothing more is appended (no hole in the file)
        self._lost = False

    def append(self, data):
        if self._lost:
            # past a loss: what follows would be written after a hole
            data = b""
        b = self._behind + data
        if not b:
            return
        try:
            self._write(b)
        except OSError as e:
            if len(b) > _MAX_BEHIND_BYTES:
                # the file stays a prefix of the run's (a reload numbers
                # frames by line, and log offsets by length): the held bytes
                # are kept, the new ones and all after them are not
                pkdlog(
                    "{} lost bytes={} and all that follows error={}",
                    self._key,
                    len(data),
                    e,
                )
                self._lost = True
                b = self._behind
            self._behind = b
            self._store.behind(self._key, e)
            return
        if self._behind:
            self._behind = b""
            self._store.caught_up(self._key)

    def _write(self, data):
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._path, "ab", buffering=0)
        fd = self._file.fileno()
        n = 0
        try:
            with memoryview(data) as m:
                while n < len(data):
                    n += self._file.write(m[n:])
        except OSError:
            if n:
                # a line cut short would hide every later line from a reload
                os.ftruncate(fd, os.fstat(fd).st_size - n)
            raise

    def close(self):
        """Durable, with what was behind if it fits now (the writer thread).

        Returns:
            bool: the file holds every byte appended (nothing lost)
        """
        whole = not self._lost
        if self._behind:
            try:
                self._write(self._behind)
            except OSError as e:
                pkdlog("{} lost bytes={} error={}", self._key, len(self._behind), e)
                whole = False
            self._behind = b""
            self._store.caught_up(self._key)
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
        return whole
