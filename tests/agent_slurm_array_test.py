"""Job arrays without Slurm: agent.slurm_text's command lines, script and
parsing of array tasks (the shapes squeue and sacct write them in, as seen on
the test site's Slurm 22.05), and agent.slurm_array's grouping of runs."""

import os
import pathlib
import subprocess

import pytest

from agent import slurm_array, slurm_jobs, slurm_text


def test_array_sbatch_argv_has_one_task_per_run_and_the_limit():
    d = pathlib.Path("/home/u/simvisor/run/.simvisor-arrays/5f1e-r-1")
    a = slurm_text.array_sbatch_argv(
        "5f1e", d, 20, 4, 2, 90, {"partition": "debug", "array": {"key": "5f1e"}}
    )
    assert a[:3] == ["sbatch", "--parsable", "--job-name=simvisor-array-5f1e"]
    assert "--array=0-19%4" in a
    assert f"--chdir={d}" in a
    # Slurm opens each task's files through its link to the run directory
    assert f"--output={d}/%a/run.out" in a and f"--error={d}/%a/run.err" in a
    # each task has what one run would have
    assert "--ntasks=2" in a and "--time=2" in a and "--partition=debug" in a
    assert a[-1] == str(d / slurm_text.ARRAY_SCRIPT_FILE)
    # the array key is no sbatch option
    assert not any("array=" in x and x != "--array=0-19%4" for x in a)
    assert "--array=0-2" in slurm_text.array_sbatch_argv("k", d, 3, None, 1, 60, {})
    # a limit of at least the tasks is no limit
    assert "--array=0-2" in slurm_text.array_sbatch_argv("k", d, 3, 3, 1, 60, {})
    c = slurm_text.array_sbatch_argv("k", d, 1, None, 4, 60, {"cores_as": "cpus"})
    assert "--array=0-0" in c and "--cpus-per-task=4" in c


def test_the_array_script_runs_the_job_script_of_its_task(tmp_path):
    """Task N runs N/job.sh in the run directory that N links to (bash, no Slurm)."""
    d = tmp_path / "array dir"
    d.mkdir()
    for i in range(3):
        r = tmp_path / f"run-{i}"
        r.mkdir()
        j = r / slurm_text.SCRIPT_FILE
        j.write_text('#!/bin/bash\necho "$PWD $SLURM_ARRAY_TASK_ID"\n')
        j.chmod(0o700)
        os.symlink(r, d / str(i))
    s = d / slurm_text.ARRAY_SCRIPT_FILE
    s.write_text(slurm_text.array_script(d))
    s.chmod(0o700)
    for i in (2, 0):
        o = subprocess.run(
            [str(s)],
            env={"SLURM_ARRAY_TASK_ID": str(i), "PATH": os.environ["PATH"]},
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert o == f"{tmp_path / f'run-{i}'} {i}\n"
    r = subprocess.run(
        [str(s)], env={"SLURM_ARRAY_TASK_ID": "7"}, capture_output=True, text=True
    )
    assert r.returncode == 1 and "7" in r.stderr


@pytest.mark.parametrize(
    "text,ids",
    [
        ("123", ["123"]),
        ("123_4", ["123_4"]),
        ("123_[4-6,9%2]", ["123_4", "123_5", "123_6", "123_9"]),
        ("123_[7]", ["123_7"]),
        ("123_[4-x]", ["123_[4-x]"]),
        ("123+0", ["123+0"]),
    ],
)
def test_expand_job_id(text, ids):
    assert slurm_text.expand_job_id(text) == ids


def test_split_job_id():
    assert slurm_text.split_job_id("123_4") == ("123", 4)
    assert slurm_text.split_job_id("123") == ("123", None)
    assert slurm_text.split_job_id("123_[4-5]") == ("123_[4-5]", None)


def test_parse_squeue_of_array_tasks():
    # squeue -r: a line per task; without -r, the pending ones are one line;
    # the array's own record (no index) once its pending tasks were canceled
    t = "7_0|RUNNING|None\n7_[1-3%1]|PENDING|JobArrayTaskLimit\n8|CANCELLED|Resources\n"
    assert slurm_text.parse_squeue(t) == {
        "7_0": ("RUNNING", ""),
        "7_1": ("PENDING", "JobArrayTaskLimit"),
        "7_2": ("PENDING", "JobArrayTaskLimit"),
        "7_3": ("PENDING", "JobArrayTaskLimit"),
        "8": ("CANCELLED", "Resources"),
    }


def test_parse_sacct_of_an_array_prefers_each_tasks_own_record():
    # sacct's record of the tasks that never started may name started ones
    # too (as Slurm 22.05 writes it while they run, or after a cancel)
    t = (
        "130_[4-6]|CANCELLED by 1001|0:0\n"
        "130_0|COMPLETED|0:0\n"
        "130_4|COMPLETED|0:0\n"
        "130_5|FAILED|2:0\n"
    )
    assert slurm_text.parse_sacct(t) == {
        "130_0": ("COMPLETED", 0, 0),
        "130_4": ("COMPLETED", 0, 0),
        "130_5": ("FAILED", 2, 0),
        "130_6": ("CANCELLED", 0, 0),
    }


def test_state_of_a_task_may_be_its_arrays_record():
    q = {"7_0": ("RUNNING", ""), "8": ("CANCELLED", ""), "9": ("PENDING", "")}
    assert slurm_text.state_of(q, "7_0") == ("RUNNING", "")
    assert slurm_text.state_of(q, "7_1") is None
    # the pending tasks of 8 were canceled together: their array's record
    assert slurm_text.state_of(q, "8_3") == ("CANCELLED", "")
    # an array's record that has not ended says nothing of a missing task
    assert slurm_text.state_of(q, "9_3") is None
    # a job is only itself
    assert slurm_text.state_of(q, "10") is None
    assert slurm_text.arrays_in(q, {"11_2": ("COMPLETED", 0, 0)}) == {
        "7",
        "8",
        "9",
        "11",
    }


def test_sacct_asks_about_each_array_once():
    assert slurm_text.sacct_ids(["7_0", "12", "7_3", "8_1", "12"]) == ["12", "7", "8"]


@pytest.mark.parametrize(
    "job_ids,live,argv",
    [
        # every live task of array 7: the array, once
        (["7_0", "7_1"], ["7_0", "7_1", "12"], ["7"]),
        # some of them: those tasks, as one argument
        (
            ["7_1", "7_2", "7_3", "7_9"],
            ["7_0", "7_1", "7_2", "7_3", "7_9"],
            ["7_[1-3,9]"],
        ),
        (["7_4"], ["7_0", "7_4"], ["7_4"]),
        # jobs as they are, with arrays
        (["12", "7_0", "13"], ["7_0", "7_1", "12", "13"], ["12", "13", "7_0"]),
    ],
)
def test_scancel_argv(job_ids, live, argv):
    assert slurm_text.scancel_argv(job_ids, live) == ["scancel", *argv]


def test_index_ranges():
    assert slurm_text.index_ranges({9, 0, 1, 2, 3, 4, 7, 10}) == "0-4,7,9-10"
    assert slurm_text.index_ranges([5]) == "5"


async def test_one_array_has_one_shape(tmp_path):
    def run(index, **kw):
        b = kw.pop("batch", {})
        op = dict(
            run_id=f"r-{index}",
            op_id=0,
            kind="run",
            code="sleep",
            argv=["sleep"],
            params={},
            inputs={},
            run_dir=str(tmp_path),
            cores=1,
            max_run_secs=60,
            batch=dict(b, array={"key": "w1", "limit": 2, "index": index}),
        )
        op.update(kw)
        return slurm_jobs.SlurmRun(op, lambda r, k: None)

    s = slurm_array.array_shape(run(0))
    # the members of one sweep differ in their index only
    assert slurm_array.array_shape(run(5)) == s
    # a second in the same minute of --time is the same job
    assert slurm_array.array_shape(run(1, max_run_secs=59)) == s
    for r in (
        run(1, cores=2),
        run(1, max_run_secs=61),
        run(1, batch={"qos": "premium"}),
        run(1, launch="mpi"),
    ):
        assert slurm_array.array_shape(r) != s
    r = run(1)
    r.batch_options["array"]["key"] = "w2"
    assert slurm_array.array_shape(r) != s
