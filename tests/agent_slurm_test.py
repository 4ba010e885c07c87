"""agent.slurm_text and agent.slurm_jobs without Slurm: command lines, the job
script, parsing, the state mapping, the job table, and the journaled reads of
a job's files."""

import pathlib

import pytest

from agent import outputs, slurm_jobs, slurm_text

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAMMPS = ROOT / "tests" / "data" / "lammps"


def test_time_limit_is_whole_minutes_never_below_the_run_limit():
    assert slurm_text.time_limit_minutes(1) == 1
    assert slurm_text.time_limit_minutes(60) == 1
    assert slurm_text.time_limit_minutes(61) == 2
    assert slurm_text.time_limit_minutes(3600) == 60


def test_sbatch_argv_maps_cores_time_and_site_options():
    d = pathlib.Path("/home/u/simvisor/run/abc")
    a = slurm_text.sbatch_argv(
        "r-1",
        d,
        2,
        90,
        {"partition": "debug", "account": "m1", "qos": "", "extra": ["--exclusive"]},
    )
    assert a[:2] == ["sbatch", "--parsable"]
    assert "--ntasks=2" in a
    assert "--time=2" in a
    assert "--partition=debug" in a and "--account=m1" in a
    # empty options are left out
    assert not any(x.startswith("--qos") for x in a)
    assert f"--output={d / slurm_text.OUT_FILE}" in a
    assert f"--chdir={d}" in a
    assert a[-2:] == ["--exclusive", str(d / slurm_text.SCRIPT_FILE)]
    c = slurm_text.sbatch_argv("r-1", d, 4, 10, {"cores_as": "cpus"})
    assert "--ntasks=1" in c and "--cpus-per-task=4" in c


def test_an_mpi_launch_asks_for_tasks_whatever_cores_as_says():
    d = pathlib.Path("/home/u/simvisor/run/abc")
    for b in ({}, {"cores_as": "tasks"}, {"cores_as": "cpus"}):
        a = slurm_text.sbatch_argv("r-1", d, 4, 10, b, "mpi")
        assert "--ntasks=4" in a, b
        assert not any(x.startswith("--cpus-per-task") for x in a), b


async def test_an_mpi_job_script_starts_the_ranks_with_mpirun(tmp_path):
    r = slurm_jobs.SlurmRun(_op(tmp_path, launch="mpi", cores=2), _no_event)
    r.mpi_launcher = list(slurm_text.MPI_LAUNCHER)
    s = slurm_text.job_script("r-1", r.command(), r.cores, r.launch)
    assert "exec mpirun -np 2 lmp -in in.melt -log log.lammps\n" in s
    e = next(l for l in s.splitlines() if l.startswith("export "))
    # ranks of one thread each, hwloc quiet; nothing for root (Slurm users are not)
    assert e.split()[1:] == [
        "SIMVISOR_CORES=2",
        "OMP_NUM_THREADS=1",
        "HWLOC_HIDE_ERRORS=2",
    ]
    p = slurm_text.job_script("r-1", ["lmp"], 3)
    assert "export SIMVISOR_CORES=3 OMP_NUM_THREADS=3\n" in p
    assert "HWLOC" not in p and "mpirun" not in p


def test_job_script_quotes_the_command():
    s = slurm_text.job_script("r-1", ["/usr/bin/python3", "-m", "x", "a b;rm -rf /"], 2)
    assert s.startswith("#!/bin/bash\n")
    assert "SIMVISOR_CORES=2" in s
    assert "exec /usr/bin/python3 -m x 'a b;rm -rf /'\n" in s


@pytest.mark.parametrize(
    "out,job_id",
    [("123\n", "123"), ("456;cluster\n", "456")],
)
def test_parse_sbatch(out, job_id):
    assert slurm_text.parse_sbatch(out) == job_id


def test_parse_sbatch_refuses_what_is_not_an_id():
    with pytest.raises(slurm_text.SlurmError, match="not a job id"):
        slurm_text.parse_sbatch("Submitted batch job 12\n")


def test_parse_squeue():
    t = "12|PENDING|Resources\n13|RUNNING|None\n\n14|COMPLETED|(null)\nbad line\n"
    assert slurm_text.parse_squeue(t) == {
        "12": ("PENDING", "Resources"),
        "13": ("RUNNING", ""),
        "14": ("COMPLETED", ""),
    }


def test_parse_sacct():
    t = "12|COMPLETED|0:0\n13|CANCELLED by 1001|0:15\n14|FAILED|3:0\n15|TIMEOUT|0:0\n"
    assert slurm_text.parse_sacct(t) == {
        "12": ("COMPLETED", 0, 0),
        "13": ("CANCELLED", 0, 15),
        "14": ("FAILED", 3, 0),
        "15": ("TIMEOUT", 0, 0),
    }


@pytest.mark.parametrize(
    "state,exit_code,signal_,canceled,timed_out,status,error",
    [
        ("COMPLETED", 0, 0, False, False, "completed", None),
        ("FAILED", 3, 0, False, False, "error", "exit code 3 (FAILED)"),
        ("FAILED", 0, 9, False, False, "error", "killed by signal 9"),
        ("CANCELLED", 0, 15, True, False, "canceled", None),
        ("CANCELLED", 0, 15, False, True, "timed_out", "max run time"),
        ("CANCELLED", 0, 15, False, False, "canceled", "canceled in Slurm"),
        ("TIMEOUT", 0, 0, False, False, "timed_out", "time limit of 2 min"),
        ("DEADLINE", 0, 0, False, False, "timed_out", "DEADLINE"),
        ("OUT_OF_MEMORY", 0, 0, False, False, "error", "out of memory"),
        ("NODE_FAIL", 0, 0, False, False, "error", "NODE_FAIL"),
        ("PREEMPTED", 0, 0, False, False, "error", "PREEMPTED"),
        ("BOOT_FAIL", 0, 0, False, False, "error", "BOOT_FAIL"),
        ("REVOKED", 0, 0, False, False, "error", "REVOKED"),
    ],
)
def test_end_of_maps_slurm_states(
    state, exit_code, signal_, canceled, timed_out, status, error
):
    assert state in slurm_text.TERMINAL
    s, e = slurm_text.end_of(state, exit_code, signal_, canceled, timed_out, 2)
    assert s == status
    if error is None:
        assert e is None
    else:
        assert error in e


def test_job_table_is_durable_and_survives_a_bad_file(tmp_path):
    t = slurm_jobs.JobTable(tmp_path)
    t.jobs["r-1"] = {"job_id": "12", "op": {"run_id": "r-1"}, "end": None}
    t.save()
    assert slurm_jobs.JobTable(tmp_path).jobs == t.jobs
    assert not list(tmp_path.glob(".jobs.*"))
    (tmp_path / slurm_jobs.JOBS_FILE).write_text("{torn")
    assert slurm_jobs.JobTable(tmp_path).jobs == {}
    assert (tmp_path / "jobs.bad").read_text() == "{torn"


def _no_event(run, kind):
    pass


def _op(run_dir, **kw):
    return dict(
        dict(
            run_id="r-1",
            op_id=0,
            kind="run",
            code="lammps",
            argv=["lmp", "-in", "in.melt", "-log", "log.lammps"],
            params={},
            inputs={},
            run_dir=str(run_dir),
            cores=1,
            max_run_secs=60,
            launch="process",
            follow=[
                {"file": "log.lammps", "parser": "lammps_log"},
                {"file": "dump.melt", "parser": "lammps_dump"},
            ],
            steps=500,
        ),
        **kw,
    )


def _job(run_dir, journal):
    """A run record of the job in `run_dir` with its reads (as `agent.slurm` makes them)."""
    r = slurm_jobs.SlurmRun(_op(run_dir), _no_event)
    r.dir = run_dir
    r.outputs = outputs.Outputs(r, None)
    r.reads = slurm_jobs.JobReads(r, journal)
    return r


def _held(run):
    """What the supervisor would hold of `run`: its frames and its log text."""
    return run.frames, run.log.text_from(0, run.log.end)[1]


class _Writer:
    """A job writing its files in pieces: stdout, stderr, LAMMPS's log and dump."""

    def __init__(self, run_dir):
        self.dir = run_dir
        self.log = (LAMMPS / "melt_small.log").read_bytes()
        self.dump = (LAMMPS / "melt_small.dump").read_bytes()
        self.at = {"log": 0, "dump": 0}

    def step(self, i):
        """Piece `i` of each file: the log in small pieces, the dump in larger ones."""
        self._append("log.lammps", "log", 80 + 11 * i)
        if i % 3 == 1:
            self._append("dump.melt", "dump", 9000)
        with open(self.dir / slurm_text.OUT_FILE, "ab") as f:
            f.write(f"screen line {i}\n".encode())
        if i % 4 == 2:
            with open(self.dir / slurm_text.ERR_FILE, "ab") as f:
                f.write(f"stderr line {i}\n".encode())

    def done(self):
        return all(self.at[k] >= len(getattr(self, k)) for k in self.at)

    def _append(self, name, key, n):
        b = getattr(self, key)
        with open(self.dir / name, "ab") as f:
            f.write(b[self.at[key] : self.at[key] + n])
        self.at[key] += n


async def test_a_replayed_journal_gives_the_frames_and_log_of_the_live_reads(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    j = tmp_path / "reads" / "r-1"
    first = _job(d, j)
    first.reads.create()
    w = _Writer(d)
    for i in range(8):
        w.step(i)
        first.reads.read()
    # the agent dies here (what it sent, the supervisor holds); a new one
    # re-attaches the job: the same frames and log
    held = _held(first)
    a = _job(d, j)
    assert a.reads.replay() > 8
    assert _held(a) == held
    # and it goes on reading live, journaled after the first agent's reads
    i = 8
    while not w.done():
        w.step(i)
        a.reads.read()
        i += 1
    a.reads.end()
    f, text = _held(a)
    assert f[: len(held[0])] == held[0] and text.startswith(held[1])
    # a third agent, after the end, replays both agents' reads
    b = _job(d, j)
    b.reads.replay()
    b.reads.end()
    assert _held(b) == (f, text)
    # what the test covers: several rows frames, snapshots and log from
    # all three sources, cut and interleaved as they were read
    rows = [x for x in f if x["plot"] == "rows"]
    assert len(rows) > 3 and any(x["plot"] == "snapshot" for x in f)
    assert "screen line 0\n" in text and "stderr line 2\n" in text
    # read from the start without the journal, the same files give other
    # frames (one rows frame for the whole table): the supervisor, holding
    # frames by seq, would lose and repeat some
    j.unlink()
    n = _job(d, j)
    assert n.reads.replay() == 0
    n.reads.end()
    assert n.frames != f
    # the same steps in any case
    assert _steps(n.frames) == _steps(f)


def _steps(frames):
    return [
        r[x["columns"].index("Step")]
        for x in frames
        if x["plot"] == "rows"
        for r in x["rows"]
    ]


async def test_a_torn_last_line_of_the_journal_is_cut_off(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    j = tmp_path / "r-1"
    live = _job(d, j)
    live.reads.create()
    w = _Writer(d)
    for i in range(3):
        w.step(i)
        live.reads.read()
    good = j.read_bytes()
    # the agent died in the middle of writing a line: that read was not used
    with open(j, "ab") as f:
        f.write(b"2 99")
    a = _job(d, j)
    assert a.reads.replay() == good.count(b"\n")
    assert _held(a) == _held(live)
    assert j.read_bytes() == good
    # it goes on from there, journaled after the good lines
    w.step(3)
    a.reads.read()
    assert j.read_bytes().startswith(good) and len(j.read_bytes()) > len(good)
    b = _job(d, j)
    b.reads.replay()
    assert _held(b) == _held(a)


async def test_a_truncated_file_is_read_again_from_its_start_in_the_replay_too(
    tmp_path,
):
    d = tmp_path / "run"
    d.mkdir()
    j = tmp_path / "r-1"
    live = _job(d, j)
    live.reads.create()
    log = (LAMMPS / "melt_small.log").read_bytes()
    (d / "log.lammps").write_bytes(log[:2000])
    live.reads.read()
    (d / "log.lammps").write_bytes(log[:1500])
    live.reads.read()
    assert b"2 0\n" in j.read_bytes()
    with open(d / "log.lammps", "ab") as f:
        f.write(log[1500:])
    live.reads.read()
    live.reads.end()
    a = _job(d, j)
    a.reads.replay()
    a.reads.end()
    assert _held(a) == _held(live)
    # a file that was never there is said so, in both
    assert "[simvisor agent: dump.melt was not written]" in _held(a)[1]


async def test_removing_the_reads_removes_the_journal(tmp_path):
    r = _job(tmp_path, tmp_path / "reads" / "r-1")
    r.reads.create()
    assert (tmp_path / "reads" / "r-1").exists()
    r.reads.remove()
    r.reads.remove()
    assert not (tmp_path / "reads" / "r-1").exists()
