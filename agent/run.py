"""One run's record: what a simulation process reported, and its output as lines.

A `Run` holds a run's state, progress, frames and log (`LogText`, the tail
in memory and all of it in `LOG_FILE`), so a client that was disconnected can
send what the supervisor missed. `Output` turns the process's stdout and
stderr (from its keeper's output file, or a Slurm job's files) into whole
lines for its `Run`: report lines (`protocol.REPORT_PREFIX`
and one JSON object) become progress and frames, everything else is log.

No process control here: `agent.pool` spawns, times out and kills runs.
"""

import asyncio
import collections
import itertools
import json
import sys

from agent import follow, owned, protocol, results

#: argv element replaced by the agent's own interpreter
PYTHON_ARG = "{python}"

#: the run's log as a file in its run directory, next to its outputs
LOG_FILE = "run.log"

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

_REPORT_PREFIX_BYTES = protocol.REPORT_PREFIX.encode()

#: appended to a log chunk rather than starting a new one below this size,
#: so a chatty code does not make millions of tiny chunks
_LOG_MERGE_CHARS = 4096


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
        #: the op as received (the Slurm pool keeps it in its job table)
        self.op = op
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
        #: batch job options (partition, account, qos, cores_as) for Slurm
        self.batch_options = op.get("batch") or {}
        #: "mpi": the pool starts `cores` ranks of the command
        self.launch = op.get("launch", "process")
        #: the output files to follow (`agent.outputs`), and the steps of a run
        self.follow = op.get("follow") or []
        self.steps = op.get("steps")
        #: what it reports at its end (`agent.results`), fed every frame and row
        self.results = results.Results(op.get("result") or [])
        #: the followers of `follow` (`agent.outputs.Outputs`), set by the pool
        self.outputs = None
        #: the pool's launcher of `cores` ranks (``{cores}`` filled), for
        #: an ``mpi`` launch
        self.mpi_launcher = None
        #: queued, preparing, spawning, running, exited
        self.state = "queued"
        self.pid = None
        self.progress = None
        self.frames = []
        self.log = LogText(MAX_LOG_CHARS)
        self.canceled = False
        self.timed_out = False
        #: bytes of its directory once over the op's ``max_bytes`` (`agent.space`)
        self.over_bytes = None
        #: ``{file, done, total}`` while a library file is fetched (`agent.staging`)
        self.staging = None
        #: (st_dev, st_ino) -> size of the library files linked into its directory
        self.staged_inodes = {}
        #: a re-attach could not make the frames again past this many (a
        #: followed file changed meanwhile): the next ones go after those
        #: the supervisor holds (`fill_gap`)
        self.frames_gap_at = None
        self._held_frames = None
        self.status = None
        self.exit_code = None
        self.error = None
        #: resolved once the run has ended ("exited" emitted, group gone)
        self.ended = asyncio.get_running_loop().create_future()
        self.task = None
        self.dir = None
        self.kill_start_secs = None
        self.kill_timer = None
        #: a Slurm job's {job_id, state, reason} (`agent.slurm_jobs.SlurmRun`)
        self.batch = None
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

    def log_fields(self):
        """More ``key=value`` for the agent's log lines about this run."""
        return {}

    def command(self):
        """The argv to execute: `PYTHON_ARG` is the agent's own interpreter,
        behind `mpi_launcher` for an ``mpi`` launch."""
        rv = [sys.executable if a == PYTHON_ARG else a for a in self.argv]
        if self.launch == "mpi" and self.mpi_launcher:
            m = [a.replace("{cores}", str(self.cores)) for a in self.mpi_launcher]
            rv = m + rv
        return rv

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

    def result(self):
        """What the run reports at its end (`agent.results`); None: nothing declared."""
        return self.results.values() if self.results else None

    def stderr_tail(self):
        """The last lines of stderr (for the error text of a failed run)."""
        return "\n".join(self._stderr_tail).strip()[-MAX_ERROR_CHARS:]

    def end_error(self, rc):
        """The error text of a failed run: the code's own error lines (from
        its output files), else the stderr tail, else the exit code."""
        if self.outputs is not None and self.outputs.errors:
            return "\n".join(self.outputs.errors)[-MAX_ERROR_CHARS:]
        t = self.stderr_tail()
        if t:
            return t
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
        # open for the whole run; close_log_file closes it
        # never through what the code may have put there (a symlink: the
        # agent is often root)
        fd = owned.open_for_writing(self.dir / LOG_FILE)
        self._log_file = open(fd, "w", encoding="utf-8")

    def close_log_file(self):
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def set_progress(self, value):
        """Progress (0 to 1) from a report or a followed file."""
        self.progress = value
        self._emit(self, "progress")

    def fill_gap(self, held=None):
        """The supervisor holds `held` frames (its welcome; None: as told
        before): what this agent makes from the gap on is numbered after
        them. What fills the gap (None) is never sent."""
        if held is not None:
            self._held_frames = held
        g = self.frames_gap_at
        if g is None or self._held_frames is None:
            return
        self.frames_gap_at = None
        if self._held_frames > g:
            self.frames[g:g] = [None] * (self._held_frames - g)

    def add_frame(self, frame, size=None):
        """A frame (a dict) from a report line or a followed file, within the limits.

        Args:
            size (int): its size as JSON, if known
        """
        # before the limits: a frame dropped still counts for the result
        self.results.add_frame(frame)
        if size is None:
            size = len(json.dumps(frame, separators=(",", ":")))
        self._frame_bytes += size
        if len(self.frames) >= MAX_FRAMES or self._frame_bytes > MAX_FRAME_BYTES_HELD:
            if not self._frames_dropped:
                self._frames_dropped = True
                self.append_log(
                    f"[simvisor agent: too many frames (more than {MAX_FRAMES}"
                    f" or {MAX_FRAME_BYTES_HELD} bytes); dropping the rest]\n"
                )
            return
        self.frames.append(frame)
        self._emit(self, "frame")

    def _on_report(self, raw, kind, value):
        if kind == "progress":
            self.set_progress(value)
            return
        self.add_frame(value, len(raw))


class Output:
    """A run's stdout and stderr, in any pieces, as whole lines to its `Run`."""

    def __init__(self, run):
        self._run = run
        self._lines = {1: follow.Lines(MAX_LINE_BYTES), 2: follow.Lines(MAX_LINE_BYTES)}

    def pipe_data_received(self, fd, data):
        self._to_run(fd, self._lines[fd].feed(data))

    def flush(self):
        """Text still without a newline goes to the log (the run is ending)."""
        for fd, x in self._lines.items():
            self._to_run(fd, x.flush())

    def _to_run(self, fd, lines):
        if not lines:
            return
        if fd == 1:
            self._run.on_stdout_lines(lines)
        else:
            self._run.on_stderr_lines(lines)


def _decode(raw):
    t = raw.decode("utf-8", errors="replace")
    if t.endswith("\r\n"):
        return t[:-2] + "\n"
    return t


def _parse_report(raw):
    """(kind, value) of a report line, or None if it is malformed (then it is log)."""
    try:
        o = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(o, dict) or len(o) != 1:
        return None
    # as deep as the frame it becomes: the supervisor refuses deeper ones
    if not protocol.within_depth(o):
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
