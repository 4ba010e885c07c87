"""agent.slurm_text and the job table of agent.slurm_jobs, without Slurm: command lines, parsing, the state mapping, the job table."""

import pathlib

import pytest

from agent import slurm_jobs, slurm_text


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
