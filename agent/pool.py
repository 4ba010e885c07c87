"""The agent's process pool: starts simulation codes and records what they report.

Each run is a process in its own process group (its own session), started in
its run directory with a clean environment. Its stdout and stderr arrive as
pipe events (`asyncio.SubprocessProtocol`): report lines become progress and
frames, everything else is the run's log. A `Run` holds all of it, so a
client that was disconnected can send what the supervisor missed.

Runs and analyses have separate lanes (semaphores), so an analysis never
waits behind long runs. Pure asyncio and event driven; the one poll is the
wait for a killed process group to empty, since the kernel gives no event for
that.

Also the agent's small shared helpers: `log` (key=value lines on stderr; the
agent depends on the stdlib and tornado only) and `resolve_inside`.
"""

import asyncio
import collections
import ctypes
import datetime
import itertools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import traceback

from agent import protocol

#: written into the run directory before the code starts (see agent.codes)
PARAMS_FILE = "params.json"

#: the run's log as a file in its run directory, next to its outputs
LOG_FILE = "run.log"

#: argv element replaced by the agent's own interpreter
PYTHON_ARG = "{python}"

#: log text held in memory per run; beyond it only the tail is kept (the
#: whole log stays in `LOG_FILE`)
MAX_LOG_CHARS = 8 * 1024 * 1024

#: frames held per run, by count and by size of their JSON lines; a code is
#: meant to send about 100 (see agent.codes)
MAX_FRAMES = 100_000
MAX_FRAME_BYTES_HELD = 64 * 1024 * 1024

#: a stdout line longer than this cannot be a report: it goes to the log
MAX_LINE_BYTES = 1024 * 1024

#: stderr lines kept for the error text of a failed run
STDERR_TAIL_LINES = 20
MAX_ERROR_CHARS = 4000

#: after SIGKILL (or after the grace), how long a process group may take to
#: disappear before we give up waiting (a process stuck in the kernel)
GROUP_EXIT_SLACK_SECS = 5.0

#: how long the pipes may stay open after the group is gone (held by a
#: process that left the group) before the run ends without them
PIPE_DRAIN_SECS = 2.0

_REPORT_PREFIX_BYTES = protocol.REPORT_PREFIX.encode()

#: appended to a log chunk rather than starting a new one below this size,
#: so a chatty code does not make millions of tiny chunks
_LOG_MERGE_CHARS = 4096

_PR_SET_PDEATHSIG = 1

_MAX_LOG_VALUE_CHARS = 2000

_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        # not Linux: runs still get their own group, only not the death signal
        return None


# loaded before any fork: the child only calls it
_prctl = _load_prctl()


def log(event, **fields):
    """Write one ``time event key=value ...`` line to stderr. Never pass a secret.

    Args:
        event (str): what happened, one word
        fields: values; strings with spaces or quotes are JSON quoted
    """
    t = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    p = [t[:-4] + "Z", event]
    for k, v in fields.items():
        s = v if isinstance(v, str) else repr(v)
        if len(s) > _MAX_LOG_VALUE_CHARS:
            s = s[:_MAX_LOG_VALUE_CHARS] + "..."
        if not s or any(c.isspace() or c in "\"'=" for c in s):
            s = json.dumps(s)
        p.append(f"{k}={s}")
    sys.stderr.write(" ".join(p) + "\n")
    sys.stderr.flush()


def resolve_inside(root, path):
    """`path` (relative to `root`) resolved, or None if it is `root` or escapes it.

    Args:
        root (pathlib.Path): resolved directory
        path (str): relative (or absolute) path
    Returns:
        pathlib.Path: resolved, strictly inside `root`; None if not
    """
    if not path or "\0" in path:
        return None
    p = (root / path).resolve()
    if p == root or not p.is_relative_to(root):
        return None
    return p


class PoolError(Exception):
    """A request the pool refuses outright (e.g. a run id it already holds)."""


class LogText:
    """A run's log text: the tail held in memory, addressed by offsets in the whole log.

    `start` is the offset of the first character held, `end` the length of
    the whole log; the client's send cursor is an offset in between.
    """

    def __init__(self, max_chars):
        self.max_chars = max_chars
        self.start = 0
        self.end = 0
        self.trimmed = False
        self._chunks = collections.deque()

    def append(self, text):
        if not text:
            return
        if self._chunks and len(self._chunks[-1]) < _LOG_MERGE_CHARS:
            self._chunks[-1] += text
        else:
            self._chunks.append(text)
        self.end += len(text)
        while self.end - self.start > self.max_chars:
            self.trimmed = True
            c = self._chunks[0]
            x = self.end - self.start - self.max_chars
            if len(c) <= x:
                self._chunks.popleft()
                self.start += len(c)
            else:
                self._chunks[0] = c[x:]
                self.start += x

    def text_from(self, offset, max_chars):
        """Text from `offset` (or from `start` if that was dropped).

        Args:
            offset (int): where the reader is
            max_chars (int): at most this much
        Returns:
            tuple: (offset of the text, text)
        """
        o = max(offset, self.start)
        if o >= self.end:
            return self.end, ""
        # readers are near the end: find the first chunk walking back from it
        s = self.end
        i = len(self._chunks)
        while s > o:
            i -= 1
            s -= len(self._chunks[i])
        rv = []
        n = 0
        for c in itertools.islice(self._chunks, i, None):
            rv.append(c)
            n += len(c)
            if n - (o - s) >= max_chars:
                break
        t = "".join(rv)
        return o, t[o - s : o - s + max_chars]


class Run:
    """One simulation (or analysis) process and everything it reported.

    The record outlives the process: the supervisor `forget`s it once it has
    stored the end state.

    Args:
        op (dict): the parsed ``run`` or ``analysis`` message
        emit (callable): ``emit(run, kind)``, the pool's event callback
    """

    def __init__(self, op, emit):
        self.run_id = op["run_id"]
        self.op_id = op["op_id"]
        self.kind = op["kind"]
        self.code = op["code"]
        self.argv = list(op["argv"])
        self.params = op["params"]
        self.inputs = op["inputs"]
        self.run_dir = op["run_dir"]
        self.cores = op["cores"]
        self.max_run_secs = op["max_run_secs"]
        #: queued, preparing, spawning, running, exited
        self.state = "queued"
        self.pid = None
        self.progress = None
        self.frames = []
        self.log = LogText(MAX_LOG_CHARS)
        self.canceled = False
        self.timed_out = False
        self.status = None
        self.exit_code = None
        self.error = None
        #: resolved once the run has ended ("exited" emitted, group gone)
        self.ended = asyncio.get_running_loop().create_future()
        self.task = None
        self.dir = None
        self.kill_start_secs = None
        self.kill_timer = None
        self._emit = emit
        self._frame_bytes = 0
        self._frames_dropped = False
        self._log_file = None
        self._stderr_tail = collections.deque(maxlen=STDERR_TAIL_LINES)

    def __repr__(self):
        return f"<Run {self.run_id} {self.kind} {self.state} pid={self.pid}>"

    @property
    def is_exited(self):
        return self.state == "exited"

    def append_log(self, text):
        """Add text to the log (memory, `LOG_FILE`) and emit ``log``."""
        if not text:
            return
        t = self.log.trimmed
        self.log.append(text)
        if self._log_file:
            self._log_file.write(text)
            self._log_file.flush()
        if self.log.trimmed and not t:
            # once: the offsets of the log stay those of the whole text
            self.log.append(
                f"[simvisor agent: the log is longer than {MAX_LOG_CHARS} chars;"
                f" only its tail is kept for sending, all of it is in {LOG_FILE}]\n"
            )
        self._emit(self, "log")

    def end_error(self, rc):
        """The error text of a failed run: the stderr tail, else the exit code."""
        t = "\n".join(self._stderr_tail).strip()
        if t:
            return t[-MAX_ERROR_CHARS:]
        if rc < 0:
            return f"killed by signal {-rc}"
        return f"exit code {rc}"

    def on_stdout_lines(self, lines):
        """Report lines become progress and frames; the rest is log.

        Args:
            lines (list): (bytes, whole): whole is False for a piece of a line
        """
        text = []
        for raw, whole in lines:
            if whole and raw.startswith(_REPORT_PREFIX_BYTES):
                r = _parse_report(raw[len(_REPORT_PREFIX_BYTES) :])
                if r is not None:
                    self.append_log("".join(text))
                    text = []
                    self._on_report(raw, *r)
                    continue
            text.append(_decode(raw))
        self.append_log("".join(text))

    def on_stderr_lines(self, lines):
        text = []
        for raw, _ in lines:
            t = _decode(raw)
            text.append(t)
            self._stderr_tail.append(t.rstrip("\r\n")[:500])
        self.append_log("".join(text))

    def open_log_file(self):
        self._log_file = open(self.dir / LOG_FILE, "w", encoding="utf-8")

    def close_log_file(self):
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def _on_report(self, raw, kind, value):
        if kind == "progress":
            self.progress = value
            self._emit(self, "progress")
            return
        self._frame_bytes += len(raw)
        if len(self.frames) >= MAX_FRAMES or self._frame_bytes > MAX_FRAME_BYTES_HELD:
            if not self._frames_dropped:
                self._frames_dropped = True
                self.append_log(
                    f"[simvisor agent: too many frames (more than {MAX_FRAMES}"
                    f" or {MAX_FRAME_BYTES_HELD} bytes); dropping the rest]\n"
                )
            return
        self.frames.append(value)
        self._emit(self, "frame")


class Pool:
    """Starts, watches and cancels runs, in two bounded lanes.

    Args:
        run_root (str or Path): every run directory is inside it (created)
        kill_grace_secs (float): SIGTERM to SIGKILL
        max_procs (int): runs at once
        max_analyses (int): analyses at once
        on_event (callable): ``on_event(run, kind)`` with kind one of
            started, progress, frame, log, exited; the data is in the `Run`
            (pid, progress, frames[-1], log, status...)
    """

    def __init__(self, run_root, kill_grace_secs, max_procs, max_analyses, on_event):
        self.run_root = pathlib.Path(run_root).resolve()
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.kill_grace_secs = kill_grace_secs
        #: run_id -> Run, running or ended and not yet forgotten
        self.runs = {}
        self._on_event = on_event
        self._lanes = {
            "run": asyncio.Semaphore(max_procs),
            "analysis": asyncio.Semaphore(max_analyses),
        }
        self._tasks = set()
        self._destroyed = False

    def start(self, op):
        """Start a run or analysis; every outcome, even a refusal, ends in ``exited``.

        Args:
            op (dict): a parsed ``run`` or ``analysis`` message
        Returns:
            Run: the record, already in `runs`
        Raises:
            PoolError: the run id is already held, or the pool is destroyed
        """
        if self._destroyed:
            raise PoolError("pool is shut down")
        if op["run_id"] in self.runs:
            raise PoolError(f"run_id={op['run_id']} is already held")
        r = Run(op, self._emit)
        self.runs[r.run_id] = r
        r.task = asyncio.get_running_loop().create_task(self._execute(r))
        self._tasks.add(r.task)
        r.task.add_done_callback(self._tasks.discard)
        return r

    def cancel(self, run_id):
        """Kill a run's process group; an unknown or ended run is fine.

        Returns:
            awaitable: done when the run has ended (``exited`` was emitted)
                and no process of its group remains
        """
        r = self.runs.get(run_id)
        if r is None or r.is_exited:
            f = asyncio.get_running_loop().create_future()
            f.set_result(None)
            return f
        if not r.canceled:
            r.canceled = True
            if r.state in ("queued", "preparing"):
                # no process yet: stop waiting for the lane or the directory
                r.task.cancel()
            elif r.state == "running":
                self._terminate(r)
            # spawning: _spawn_and_wait sees the flag once the process exists
        return asyncio.shield(r.ended)

    def forget(self, run_id):
        """Drop an ended run's record.

        Returns:
            bool: False if the run is still going (it is kept)
        """
        r = self.runs.get(run_id)
        if r is None:
            return True
        if not r.is_exited:
            return False
        del self.runs[run_id]
        return True

    def running(self):
        """Runs and analyses that have not ended."""
        return [r for r in self.runs.values() if not r.is_exited]

    def destroy(self):
        """SIGKILL every group and cancel every task, without events; idempotent.

        Await `join` afterwards so every process is reaped.
        """
        if self._destroyed:
            return
        self._destroyed = True
        for r in self.runs.values():
            if r.pid is not None and not r.is_exited:
                _killpg(r.pid, signal.SIGKILL)
        for t in list(self._tasks):
            t.cancel()

    async def join(self):
        """Wait until every task of the pool has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _emit(self, run, kind):
        if self._destroyed:
            return
        try:
            self._on_event(run, kind)
        except Exception as e:
            log("on_event_error", run_id=run.run_id, kind=kind, error=stack(e))

    async def _execute(self, run):
        try:
            d = resolve_inside(self.run_root, run.run_dir)
            if d is None:
                self._finish(
                    run,
                    "error",
                    None,
                    f"run_dir={run.run_dir!r} is not inside run_root",
                )
                return
            e = _check_inputs(run.inputs)
            if e:
                self._finish(run, "error", None, e)
                return
            run.dir = d
            async with self._lanes[run.kind]:
                run.state = "preparing"
                try:
                    await asyncio.to_thread(_prepare_dir, d, run.params, run.inputs)
                    run.open_log_file()
                except OSError as e:
                    self._finish(run, "error", None, f"cannot prepare run_dir: {e}")
                    return
                run.state = "spawning"
                await self._spawn_and_wait(run)
        except asyncio.CancelledError:
            self._finish(run, "canceled", None, None)
            if self._destroyed:
                raise
            # cancel() stopped a run that had no process yet: that is its end
            asyncio.current_task().uncancel()
        except Exception as e:
            log("run_error", run_id=run.run_id, error=stack(e))
            self._finish(run, "error", None, f"agent error: {e!r}")
        finally:
            run.close_log_file()
            if not run.ended.done():
                run.ended.set_result(None)

    async def _spawn_and_wait(self, run):
        loop = asyncio.get_running_loop()
        try:
            transport, out = await loop.subprocess_exec(
                lambda: _Output(run),
                *[sys.executable if a == PYTHON_ARG else a for a in run.argv],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=run.dir,
                env=_environ(run.cores),
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            self._finish(run, "error", None, f"cannot start {run.argv[0]}: {e}")
            return
        run.pid = transport.get_pid()
        run.state = "running"
        timeout_timer = loop.call_later(run.max_run_secs, self._time_out, run)
        log("run_started", run_id=run.run_id, kind=run.kind, code=run.code, pid=run.pid)
        try:
            self._emit(run, "started")
            if run.canceled:
                self._terminate(run)
            rc = await asyncio.shield(out.exited)
            timeout_timer.cancel()
            if run.kill_start_secs is None:
                # ended by itself: no child outlives its run
                _killpg(run.pid, signal.SIGKILL)
                deadline = loop.time() + GROUP_EXIT_SLACK_SECS
            else:
                # let the rest of the group heed SIGTERM until the grace ends
                deadline = (
                    run.kill_start_secs + self.kill_grace_secs + GROUP_EXIT_SLACK_SECS
                )
            if not await _wait_group_gone(run.pid, deadline):
                _killpg(run.pid, signal.SIGKILL)
                log("group_not_gone", run_id=run.run_id, pgid=run.pid)
            try:
                await asyncio.wait_for(asyncio.shield(out.closed), PIPE_DRAIN_SECS)
            except asyncio.TimeoutError:
                run.append_log(
                    "[simvisor agent: a process outside the run's process group"
                    " still holds its output open; not waiting for it]\n"
                )
            out.flush()
            self._finish(run, *_end_status(run, rc))
        finally:
            timeout_timer.cancel()
            if run.kill_timer:
                run.kill_timer.cancel()
            if not run.is_exited:
                # destroyed (or failed) while running: leave nothing behind
                _killpg(run.pid, signal.SIGKILL)
                d = loop.time() + GROUP_EXIT_SLACK_SECS
                try:
                    await asyncio.wait_for(asyncio.shield(out.exited), d - loop.time())
                    await _wait_group_gone(run.pid, d)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
            transport.close()

    def _terminate(self, run):
        """SIGTERM the group now and SIGKILL it after the grace."""
        if run.kill_timer:
            return
        loop = asyncio.get_running_loop()
        run.kill_start_secs = loop.time()
        _killpg(run.pid, signal.SIGTERM)
        run.kill_timer = loop.call_later(
            self.kill_grace_secs, _killpg, run.pid, signal.SIGKILL
        )

    def _time_out(self, run):
        if run.state != "running" or run.canceled:
            return
        run.timed_out = True
        log("run_timed_out", run_id=run.run_id, max_run_secs=run.max_run_secs)
        self._terminate(run)

    def _finish(self, run, status, exit_code, error):
        if run.is_exited:
            return
        run.state = "exited"
        run.status = status
        run.exit_code = exit_code
        run.error = error
        log("run_exited", run_id=run.run_id, status=status, exit_code=exit_code)
        self._emit(run, "exited")
        if not run.ended.done():
            run.ended.set_result(None)


class _Output(asyncio.SubprocessProtocol):
    """A run's pipes as events: whole lines to the `Run`, leader exit, pipes closed."""

    def __init__(self, run):
        loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        self.closed = loop.create_future()
        self._run = run
        self._transport = None
        self._partial = {1: b"", 2: b""}
        #: fd -> the pending bytes continue a line already logged in pieces
        self._midline = {1: False, 2: False}

    def connection_made(self, transport):
        self._transport = transport

    def pipe_data_received(self, fd, data):
        b = self._partial[fd] + data
        lines = []
        s = 0
        while True:
            i = b.find(b"\n", s)
            if i < 0:
                break
            lines.append((b[s : i + 1], not self._midline[fd]))
            self._midline[fd] = False
            s = i + 1
        b = b[s:]
        # a line this long is not a report: log it in pieces, keep memory bounded
        while len(b) >= MAX_LINE_BYTES:
            lines.append((b[:MAX_LINE_BYTES], False))
            self._midline[fd] = True
            b = b[MAX_LINE_BYTES:]
        self._partial[fd] = b
        self._lines(fd, lines)

    def pipe_connection_lost(self, fd, exc):
        self._flush_fd(fd)

    def process_exited(self):
        if not self.exited.done():
            self.exited.set_result(self._transport.get_returncode())

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)

    def flush(self):
        """Text still without a newline goes to the log (the run is ending)."""
        for fd in self._partial:
            self._flush_fd(fd)

    def _flush_fd(self, fd):
        b = self._partial.get(fd)
        if b:
            self._partial[fd] = b""
            self._lines(fd, [(b, False)])

    def _lines(self, fd, lines):
        if not lines:
            return
        if fd == 1:
            self._run.on_stdout_lines(lines)
        else:
            self._run.on_stderr_lines(lines)


def _check_inputs(inputs):
    for n in inputs:
        if (
            not n
            or n in (".", "..", PARAMS_FILE, LOG_FILE)
            or "/" in n
            or "\0" in n
            or n != os.path.basename(n)
        ):
            return f"input name={n!r} is not a plain file name (or is reserved)"
    return None


def _decode(raw):
    t = raw.decode("utf-8", errors="replace")
    if t.endswith("\r\n"):
        return t[:-2] + "\n"
    return t


def _die_with_parent(agent_pid):
    """preexec_fn: the leader gets SIGKILL when the agent dies.

    Only the leader: children it starts are killed with its group by the
    agent, or orphaned if the agent itself is SIGKILLed.
    """

    def f():
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # the agent may have died between fork and prctl
        if os.getppid() != agent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return f


def _end_status(run, rc):
    if run.canceled:
        return "canceled", rc, None
    if run.timed_out:
        return "timed_out", rc, f"max run time of {run.max_run_secs} secs exceeded"
    if rc == 0:
        return "completed", 0, None
    return "error", rc, run.end_error(rc)


def _environ(cores):
    """The simulation sees only these: nothing of the agent (its secret) leaks."""
    rv = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
    rv.setdefault("PATH", os.defpath)
    rv.setdefault("LANG", "C.UTF-8")
    rv["SIMVISOR_CORES"] = str(cores)
    rv["OMP_NUM_THREADS"] = str(cores)
    return rv


def _group_pids(pgid):
    """Pids of live (not zombie) processes in process group `pgid`."""
    rv = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return rv
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        # comm (in parens) may hold anything; the fields after it are fixed
        x = s[s.rfind(b")") + 2 :].split()
        if len(x) > 2 and x[0] != b"Z" and int(x[2]) == pgid:
            rv.append(int(n))
    return rv


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _parse_report(raw):
    """(kind, value) of a report line, or None if it is malformed (then it is log)."""
    try:
        o = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(o, dict) or len(o) != 1:
        return None
    if "progress" in o:
        p = o["progress"]
        if isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1:
            return "progress", p
        return None
    f = o.get("frame")
    if isinstance(f, dict):
        return "frame", f
    return None


def _no_constant(name):
    # NaN and Infinity are not JSON: browsers would reject the frame
    raise ValueError(f"{name} is not allowed")


def _prepare_dir(path, params, inputs):
    """A fresh run directory: what a previous run left is removed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / PARAMS_FILE).write_text(
        json.dumps(params, indent=1) + "\n", encoding="utf-8"
    )
    for n, t in inputs.items():
        (path / n).write_text(t, encoding="utf-8")


def stack(e):
    """The end of `e`'s traceback (where it was raised), for `log`."""
    return "".join(traceback.format_exception(e))[-_MAX_LOG_VALUE_CHARS:]


async def _wait_group_gone(pgid, deadline):
    """Poll /proc until group `pgid` is empty: the kernel gives no event for it.

    Returns:
        bool: False if it was not empty by `deadline` (loop time)
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    while _group_pids(pgid):
        r = deadline - loop.time()
        if r <= 0:
            return False
        await asyncio.sleep(min(delay, r))
        delay = min(delay * 2, 0.1)
    return True
