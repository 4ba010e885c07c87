"""Tests of supervisor/job.py: the transition table, runs, history, run ids.

Pure and in-process: every (from, to) pair of statuses is tried, so a change to
the table that is not reflected here fails.
"""

import itertools
import json
import time

import pytest

from supervisor import job

_ALL = sorted(job.STATUSES)

_PAIRS = [
    pytest.param(f, t, t in job.TRANSITIONS[f], id=f"{f}->{t}")
    for f, t in itertools.product(_ALL, _ALL)
]


def _job(status, **fields):
    return job.Job(dict(status=status, run_id="r-000001", **fields))


def _ran(j, run_id, status, now):
    """One whole run of `j`: queued, started, running, ended with `status`."""
    j.queue(run_id, cores=2, driver="local", kind="run", now=now)
    j.transition(job.STARTING)
    j.host = "localhost"
    j.started_at = now + 1
    j.transition(job.RUNNING)
    j.end(status, now + 2, exit_code=0 if status == job.COMPLETED else 1, error=None)


def test_table_covers_every_status():
    assert set(job.TRANSITIONS) == job.STATUSES
    for f, ts in job.TRANSITIONS.items():
        assert ts <= job.STATUSES, f
        assert job.MISSING not in ts, f"nothing goes back to missing, from={f}"
    assert job.ACTIVE.isdisjoint(job.ENDED)
    assert job.ON_AGENT <= job.ACTIVE


def test_every_status_is_reachable_and_every_active_one_can_end():
    seen = {job.MISSING}
    todo = [job.MISSING]
    while todo:
        for t in job.TRANSITIONS[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert seen == job.STATUSES
    for s in job.ACTIVE:
        assert job.TRANSITIONS[s] & job.ENDED, s
    for s in job.ENDED:
        assert job.TRANSITIONS[s] == {job.QUEUED}, s


@pytest.mark.parametrize("from_,to,allowed", _PAIRS)
def test_transition(from_, to, allowed):
    j = _job(from_)
    if allowed:
        j.transition(to)
        assert j.status == to
        return
    with pytest.raises(job.IllegalTransition) as e:
        j.transition(to)
    assert f"{from_} -> {to}" in str(e.value)
    assert "r-000001" in str(e.value)
    assert j.status == from_, "a refused transition changes nothing"


def test_illegal_transition_is_an_assertion():
    # a bug, not an expected outcome: nothing translates it into a 4xx
    assert issubclass(job.IllegalTransition, AssertionError)


def test_unknown_status_in_a_document_is_refused():
    with pytest.raises(ValueError, match="bogus"):
        job.Job({"status": "bogus"})


def test_new_job_defaults():
    j = job.Job()
    assert j.status == job.MISSING
    assert not j.is_active()
    assert j.run_id is None
    assert j.history == []
    assert j.progress == 0.0
    assert j.frames == 0


@pytest.mark.parametrize("status", sorted(job.STATUSES))
def test_is_active(status):
    assert _job(status).is_active() == (status in job.ACTIVE)


_REQUEUE = sorted(s for s, ts in job.TRANSITIONS.items() if job.QUEUED in ts)


def test_requeue_statuses():
    # STARTING: the agent vanished before it confirmed, so the run is retried
    assert set(_REQUEUE) == job.ENDED | {job.MISSING, job.STARTING}


@pytest.mark.parametrize("from_", _REQUEUE)
def test_queue_resets_per_run_fields(from_):
    old_history = [{"run_id": "r-000000", "status": job.ERROR}]
    j = _job(
        from_,
        situation="old situation",
        queue_position=3,
        progress=0.7,
        cores=8,
        driver="docker",
        host="old-host",
        kind="analysis",
        queued_at=1.0,
        started_at=2.0,
        ended_at=3.0,
        exit_code=9,
        error="old error",
        result={"u_max": 0.5},
        frames=42,
        history=old_history,
    )
    j.queue("r-000002", cores=4, driver="local", kind="run", now=100.0)
    assert j.status == job.QUEUED
    assert j.is_active()
    assert j.run_id == "r-000002"
    assert j.cores == 4
    assert j.driver == "local"
    assert j.kind == "run"
    assert j.queued_at == 100.0
    assert j.situation == "queued"
    for f in (
        "host",
        "started_at",
        "ended_at",
        "exit_code",
        "error",
        "result",
        "queue_position",
    ):
        assert getattr(j, f) is None, f
    assert j.progress == 0.0
    assert j.frames == 0
    assert j.history == old_history, "past runs are kept"


@pytest.mark.parametrize("from_", sorted(job.STATUSES - set(_REQUEUE)))
def test_queue_while_active_is_refused_and_changes_nothing(from_):
    j = _job(from_, cores=8, progress=0.5, frames=3)
    before = j.to_dict()
    with pytest.raises(job.IllegalTransition):
        j.queue("r-000002", cores=1, driver="local", kind="run", now=1.0)
    assert j.to_dict() == before


def test_end_records_the_run():
    j = job.Job()
    j.queue("r-000001", cores=3, driver="local", kind="run", now=10.0)
    j.transition(job.STARTING)
    j.host = "h1"
    j.started_at = 11.0
    j.transition(job.RUNNING)
    j.progress = 0.4
    j.situation = "running"
    j.queue_position = 1
    j.end(job.ERROR, 12.0, exit_code=3, error="boom", result={"u_max": None})
    assert j.status == job.ERROR
    assert j.result == {"u_max": None}
    assert not j.is_active()
    assert j.ended_at == 12.0
    assert j.exit_code == 3
    assert j.error == "boom"
    assert j.situation == ""
    assert j.queue_position is None
    assert j.progress == 0.4, "only a completed run jumps to 1"
    assert j.history == [
        {
            "run_id": "r-000001",
            "status": job.ERROR,
            "queued_at": 10.0,
            "started_at": 11.0,
            "ended_at": 12.0,
            "cores": 3,
            "driver": "local",
            "host": "h1",
            "exit_code": 3,
            "error": "boom",
            "result": {"u_max": None},
        }
    ]


def test_a_result_is_stored_and_stays_in_the_history():
    j = job.Job()
    _ran(j, "r-000001", job.COMPLETED, 1.0)
    assert j.result is None and j.history[0]["result"] is None
    j.queue("r-000002", cores=1, driver="local", kind="run", now=5.0)
    j.transition(job.STARTING)
    j.transition(job.RUNNING)
    j.end(job.COMPLETED, 6.0, result={"secs": 0.25, "n": 3})
    again = job.Job(json.loads(json.dumps(j.to_dict())))
    assert again.result == {"secs": 0.25, "n": 3}
    assert [h["result"] for h in again.history] == [{"secs": 0.25, "n": 3}, None]
    again.queue("r-000003", cores=1, driver="local", kind="run", now=7.0)
    assert again.result is None
    assert again.history[0]["result"] == {"secs": 0.25, "n": 3}


def test_end_completed_sets_progress():
    j = job.Job()
    _ran(j, "r-000001", job.COMPLETED, 1.0)
    assert j.progress == 1.0
    assert j.history[0]["status"] == job.COMPLETED


@pytest.mark.parametrize("from_", sorted(job.ON_AGENT))
@pytest.mark.parametrize("status", sorted(job.ENDED))
def test_end_from_every_agent_status(from_, status):
    j = _job(from_)
    j.end(status, 5.0)
    assert j.status == status
    assert j.history[0]["status"] == status
    assert j.history[0]["ended_at"] == 5.0


def test_end_of_a_queued_run():
    # canceled or failed before it ever started
    for status in (job.CANCELED, job.ERROR):
        j = job.Job()
        j.queue("r-000001", cores=1, driver="local", kind="run", now=1.0)
        j.end(status, 2.0, error="why")
        assert j.history[0]["started_at"] is None
        assert j.history[0]["status"] == status


def test_illegal_end_records_nothing():
    j = job.Job()
    j.queue("r-000001", cores=1, driver="local", kind="run", now=1.0)
    with pytest.raises(job.IllegalTransition):
        j.end(job.TIMED_OUT, 2.0)
    assert j.status == job.QUEUED
    assert j.history == []
    assert j.ended_at is None


def test_history_is_newest_first_and_bounded():
    j = job.Job()
    ids = [f"r-{i:06x}" for i in range(1, job.MAX_HISTORY + 6)]
    statuses = itertools.cycle(sorted(job.ENDED))
    for n, i in enumerate(ids):
        _ran(j, i, next(statuses), float(n * 10))
        assert len(j.history) == min(n + 1, job.MAX_HISTORY)
        assert j.history[0]["run_id"] == i
    assert [h["run_id"] for h in j.history] == ids[::-1][: job.MAX_HISTORY]
    ended = [h["ended_at"] for h in j.history]
    assert ended == sorted(ended, reverse=True)


def test_history_survives_a_new_run():
    j = job.Job()
    _ran(j, "r-000001", job.COMPLETED, 1.0)
    j.queue("r-000002", cores=1, driver="local", kind="run", now=5.0)
    assert [h["run_id"] for h in j.history] == ["r-000001"]


def test_to_dict_fields_in_order():
    assert list(job.Job().to_dict()) == list(job.FIELDS)
    assert len(set(job.FIELDS)) == len(job.FIELDS)


def test_round_trip():
    j = job.Job()
    for n in range(3):
        _ran(j, f"r-{n:06x}", job.COMPLETED, float(n))
    j.queue("r-000009", cores=4, driver="local", kind="analysis", now=50.0)
    j.transition(job.STARTING)
    j.host = "h"
    j.transition(job.RUNNING)
    j.progress = 0.25
    j.frames = 7
    j.transition(job.LOST)
    d = j.to_dict()
    # through JSON, the way the store keeps it
    k = job.Job(json.loads(json.dumps(d)))
    assert k.to_dict() == d
    assert k.status == job.LOST
    assert k.is_active()
    # the copy's history is its own
    k.end(job.ERROR, 60.0, error="lost for good")
    assert len(j.history) == 3
    assert len(d["history"]) == 3
    assert len(k.history) == 4


@pytest.mark.parametrize("status", sorted(job.STATUSES))
def test_round_trip_every_status(status):
    d = _job(status).to_dict()
    assert job.Job(d).to_dict() == d


def test_pkdebug_str():
    s = _job(job.RUNNING).pkdebug_str()
    assert "r-000001" in s
    assert job.RUNNING in s


def test_run_ids_unique_and_increasing_within_a_process():
    r = job.RunIds()
    ids = [r.next() for _ in range(10000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for a, b in itertools.pairwise(ids):
        assert a < b


def test_run_ids_increase_across_a_restart():
    now_us = int(time.time() * 1e6)
    before = job.RunIds(now_us)
    old = [before.next() for _ in range(5000)]
    # the smallest step a restart can make
    after = job.RunIds(now_us + 1)
    new = [after.next() for _ in range(10)]
    assert max(old) < min(new)
    assert not set(old) & set(new)


def test_run_ids_default_to_the_clock():
    t = int(time.time() * 1e6)
    # "later" at the prefix's resolution; the clock has sub-microsecond steps
    while int(time.time() * 1e6) <= t:
        pass
    a = job.RunIds().next()
    assert job.RunIds(t).next() < a
    assert "-" in a


def test_run_ids_keep_order_past_the_suffix_width():
    r = job.RunIds(1)
    # white box: skip to the last 6-digit suffix instead of making 16M ids
    r._counter = itertools.count(0xFFFFFF)
    a = r.next()
    b = r.next()
    assert a < b, f"{a!r} !< {b!r}"


def test_wait_and_canceling_follow_the_run():
    j = job.Job()
    j.queue("r1", 1, "local", "run", 1.0)
    # a waiting job always says why, even before its first check
    assert j.wait == {"reason": "queued"} and not j.canceling
    assert j.waiting("waiting for 2 cores", {"reason": "cores", "cores": 2})
    assert not j.waiting("waiting for 2 cores", {"reason": "cores", "cores": 2})
    assert j.to_dict()["wait"] == {"reason": "cores", "cores": 2}
    j.transition(job.STARTING)
    j.waiting("starting", None)
    j.canceling = True
    j.end(job.CANCELED, 2.0)
    assert j.wait is None and not j.canceling and j.situation == ""


def test_canceling_does_not_survive_a_restart():
    j = job.Job({"status": job.RUNNING, "run_id": "r1", "canceling": True})
    assert not j.canceling
