"""The Slurm pool's records: a run that is a batch job, its files, the table of jobs.

A `SlurmRun` is an `agent.run.Run` with what following its job needs (job
id, the last squeue/sacct answer); its `JobReads` read the job's files as
they grow (its stdout and stderr, and the output files its code declares),
journaling each read so that an agent that re-attaches the job reads them
the same way. The `JobTable` holds every job the agent submitted, durable in
the work directory, so an agent restarted on the login node re-attaches to
its jobs (`agent.slurm`).
"""

import json
import os
import pathlib
import time

from agent import rundir
from agent.log import log
from agent.run import Output, Run
from agent.slurm_text import ERR_FILE, OUT_FILE

#: the job table in the work directory
JOBS_FILE = "jobs.json"

#: the journals of the jobs' reads in the work directory: one per run id
READS_DIR = "reads"

#: most read from one file per read: the log stays bounded per step
READ_BYTES = 4 * 1024 * 1024


class SlurmRun(Run):
    """A run as a Slurm job: its `Run` record and the job it is.

    Its output comes from the job's files (`OUT_FILE`, `ERR_FILE`), read as
    they grow by its `reads`, through `out` as if they were pipes.

    Args:
        op (dict): the parsed ``run`` or ``analysis`` message (or the one
            in the job table, without inputs)
        emit (callable): ``emit(run, kind)``, the pool's event callback
    """

    def __init__(self, op, emit):
        super().__init__(op, emit)
        self.batch = dict(job_id=None, state="", reason="")
        self.job_id = None
        #: wall time Slurm was first seen running the job
        self.started_at = None
        self.out = Output(self)
        #: its files as they grow (`JobReads`), set by the pool with `outputs`
        self.reads = None
        #: monotonic time squeue or sacct last knew the job
        self.last_seen = time.monotonic()
        #: loop time of the submission (0: submitted by an agent before us)
        self.submitted = 0.0
        #: scancel succeeded (at monotonic `cancel_sent_at`); Slurm has yet
        #: to end the job
        self.cancel_sent = False
        self.cancel_sent_at = 0.0
        #: a sacct query for the exit code of a FAILED job is under way
        self.asking_exit = False
        #: its end is in the job table, to be written before it is reported
        self.ending = False
        #: a run of a job array (`agent.slurm_array`): resolved once submitted
        self.array_wait = None
        #: [its array's directory name, its task index] once submitted in one
        self.array_task = None

    def log_fields(self):
        return {"job_id": self.job_id}


class JobReads:
    """A job's files read as they grow, each read journaled before it is used.

    The sources, in this order: the job's stdout and stderr (`OUT_FILE`,
    `ERR_FILE`, through the run's `Output`: its log and report lines), then
    the files its code declared (the op's ``follow``, through the run's
    `agent.outputs.Outputs`). A shared filesystem gives no events (another
    node's writes raise no inotify event here), so the pool calls `read`
    on its timer: one read of each source, of at most `READ_BYTES`, opened
    anew each time (a network filesystem shows a file's new size to a new
    open).

    What the run's record holds depends on where the reads cut the files
    and how they interleave: a parser gives one rows frame per read, and
    the log is the sources' text in the order read. So before its bytes are
    used, each read is appended to the journal as a line ``SOURCE OFFSET``
    (the source's index, where the read ended; offset 0: the file was
    truncated), and an agent that re-attaches the job `replay`s it: the
    same reads in the same order give the same frames and log, which the
    supervisor (holding them by seq and offset) takes once. Then reading
    goes on from there, journaled as before.

    Args:
        run (SlurmRun): its ``dir`` set, its ``outputs`` if it follows files
        journal (Path): the journal's file
    """

    def __init__(self, run, journal):
        self._run = run
        self.journal = pathlib.Path(journal)
        f = [s["file"] for s in run.follow] if run.outputs is not None else []
        self._names = [OUT_FILE, ERR_FILE, *f]
        #: bytes of each source used so far
        self.offsets = [0] * len(self._names)
        self._fd = None
        self._ended = False

    def create(self):
        """A new job: an empty journal (OSError if it cannot be written)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.journal, _JOURNAL_FLAGS | os.O_TRUNC, 0o600)

    def replay(self):
        """The reads of an agent before us, again; then the journal goes on.

        A torn last line (that agent died writing it) was never used: it is
        cut off, as is anything after a line that does not parse.

        Returns:
            int: reads replayed
        """
        try:
            b = self.journal.read_bytes()
        except FileNotFoundError:
            # submitted by an agent that kept no journal: read from the start
            b = b""
        except OSError as e:
            log("reads_journal_unreadable", run_id=self._run.run_id, error=str(e))
            b = b""
        n = used = 0
        for l in b.split(b"\n")[:-1]:
            try:
                i, o = (int(x) for x in l.split())
                if not 0 <= i < len(self._names) or o < 0:
                    raise ValueError(f"source {i} offset {o}")
            except ValueError as e:
                log("reads_journal_bad", run_id=self._run.run_id, line=n, error=str(e))
                break
            self._replay_one(i, o)
            used += len(l) + 1
            n += 1
        try:
            self._fd = os.open(self.journal, _JOURNAL_FLAGS, 0o600)
            os.ftruncate(self._fd, used)
        except OSError as e:
            self._journal_failed(e)
        return n

    def read(self):
        """One read of each source (the job may still be writing)."""
        for i in range(len(self._names)):
            self._read(i)

    def end(self):
        """The job has ended: each source to its end, then the pieces of
        lines left and the parsers' last records; idempotent."""
        if self._ended:
            return
        self._ended = True
        for i in range(len(self._names)):
            while self._read(i) >= READ_BYTES:
                pass
        self._run.out.flush()
        if self._run.outputs is not None:
            self._run.outputs.finish([o > 0 for o in self.offsets[2:]])
        self.close()

    def close(self):
        """Stop journaling; idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self):
        """The journal is no longer needed (the run is forgotten, or was never a job)."""
        self.close()
        self.journal.unlink(missing_ok=True)

    def _read(self, index):
        """Read source `index` on from where it was; how many bytes were used."""
        o = self.offsets[index]
        try:
            with open(self._run.dir / self._names[index], "rb") as f:
                if os.fstat(f.fileno()).st_size < o:
                    self._journal(index, 0)
                    self._reset(index)
                    o = 0
                b = os.pread(f.fileno(), READ_BYTES, o)
        except FileNotFoundError:
            return 0
        except OSError as e:
            log(
                "output_unreadable",
                run_id=self._run.run_id,
                file=self._names[index],
                error=str(e),
            )
            return 0
        if b:
            self._journal(index, o + len(b))
            self._use(index, b)
        return len(b)

    def _replay_one(self, index, offset):
        if offset == 0:
            self._reset(index)
            return
        o = self.offsets[index]
        if offset < o:
            # cannot be written by `_read`; read as a truncation would be
            self._reset(index)
            o = 0
        try:
            with open(self._run.dir / self._names[index], "rb") as f:
                b = os.pread(f.fileno(), offset - o, o)
        except OSError as e:
            b = b""
            err = str(e)
        else:
            err = None
        if len(b) < offset - o:
            # the file changed behind the job's back: what is there
            log(
                "reads_replay_short",
                run_id=self._run.run_id,
                file=self._names[index],
                offset=offset,
                got=o + len(b),
                error=err,
            )
        if b:
            self._use(index, b)

    def _use(self, index, data):
        self.offsets[index] += len(data)
        if index < 2:
            self._run.out.pipe_data_received(index + 1, data)
        else:
            self._run.outputs.feed(index - 2, data)

    def _reset(self, index):
        self.offsets[index] = 0
        if index >= 2:
            self._run.outputs.reset(index - 2)

    def _journal(self, index, offset):
        if self._fd is None:
            return
        try:
            os.write(self._fd, f"{index} {offset}\n".encode())
        except OSError as e:
            self._journal_failed(e)

    def _journal_failed(self, error):
        # the run goes on; an agent that re-attaches it replays what was
        # written and reads the rest its own way (frames may then differ)
        log("reads_journal_failed", run_id=self._run.run_id, error=str(error))
        self.close()


_JOURNAL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class JobTable:
    """The jobs this agent submitted, durable in ``<work_dir>/jobs.json``.

    run_id -> {"op": the run op without its inputs, "job_id" (an array
    task's ``ARRAYID_TASK``), "submitted_at", "started_at" (first seen
    RUNNING, wall time), "end": {"status", "exit_code", "error"} or None,
    "array": [its array's directory name, its task index] or None}
    """

    def __init__(self, work_dir):
        self.path = pathlib.Path(work_dir) / JOBS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.jobs = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.jobs = {}
        except ValueError as e:
            # a torn table cannot happen (atomic writes); keep the evidence
            log("job_table_unreadable", path=str(self.path), error=str(e))
            self.path.rename(self.path.with_suffix(".bad"))
            self.jobs = {}

    def save(self):
        rundir.write_atomic(self.path, json.dumps(self.jobs, indent=1).encode())
