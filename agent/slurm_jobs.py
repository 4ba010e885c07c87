"""The Slurm pool's records: a run that is a batch job, and the table of jobs.

A `SlurmRun` is an `agent.run.Run` with what following its job needs (job
id, the last squeue/sacct answer, how far its output files have been read).
The `JobTable` holds every job the agent submitted, durable in the work
directory, so an agent restarted on the login node re-attaches to its jobs
(`agent.slurm`).
"""

import json
import pathlib
import time

from agent import rundir
from agent.log import log
from agent.run import Output, Run
from agent.slurm_text import ERR_FILE, OUT_FILE

#: the job table in the work directory
JOBS_FILE = "jobs.json"


class SlurmRun(Run):
    """A run as a Slurm job: its `Run` record and the job it is.

    Its output comes from the job's files (`OUT_FILE`, `ERR_FILE`), read as
    they grow, through `out` as if they were pipes.

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
        #: file name -> bytes read so far
        self.offsets = {OUT_FILE: 0, ERR_FILE: 0}
        #: monotonic time squeue or sacct last knew the job
        self.last_seen = time.monotonic()
        #: loop time of the submission (0: submitted by an agent before us)
        self.submitted = 0.0
        #: scancel succeeded; Slurm has yet to end the job
        self.cancel_sent = False
        #: a sacct query for the exit code of a FAILED job is under way
        self.asking_exit = False

    def log_fields(self):
        return {"job_id": self.job_id}


class JobTable:
    """The jobs this agent submitted, durable in ``<work_dir>/jobs.json``.

    run_id -> {"op": the run op without its inputs, "job_id",
    "submitted_at", "started_at" (first seen RUNNING, wall time), "end":
    {"status", "exit_code", "error"} or None}
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
