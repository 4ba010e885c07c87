"""Frames in the supervisor: held while a run goes, read from disk once it ended.

The supervisor's memory must not grow with what its users store: an ended
run's frames are served from its file, and a restart loads none of them.
"""

import asyncio
import json

from inproc import Push, World
from supervisor import job


async def _frames(w, sim_id, since=0):
    return json.loads(await w.sv.sims.frames(w.sv.sim_store.by_id[sim_id], since))


async def _until_on_disk_only(sim, timeout_secs=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_secs
    while sim.frames is not None:
        assert loop.time() < end, "the ended run's frames stayed in memory"
        await asyncio.sleep(0.01)


async def _ended_run_with_frames(w, count):
    s = await w.sim(secs=1)
    a, c, op = await w.running(s)
    rid = op["run_id"]
    for i in range(count):
        w.send(a, "frame", run_id=rid, seq=i, data={"step": i, "x": [i, i + 0.5]})
    sim = w.sv.sim_store.by_id[s]
    # held while the run goes, as the JSON lines written
    assert len(sim.frames) == count and all(isinstance(x, bytes) for x in sim.frames)
    w.send(a, "exited", run_id=rid, status="completed", exit_code=0, error=None)
    await w.push.until(lambda j: j["status"] == "completed")
    return s, a, rid, c


async def test_ended_runs_frames_leave_memory_and_are_read_from_disk(tmp_path):
    w = await World(tmp_path).start()
    try:
        s, a, rid, _ = await _ended_run_with_frames(w, 5)
        sim = w.sv.sim_store.by_id[s]
        await _until_on_disk_only(sim)
        f = await _frames(w, s)
        assert [x["step"] for x in f["frames"]] == [0, 1, 2, 3, 4]
        assert f["frames"][3] == {"step": 3, "x": [3, 3.5]}
        assert f["next"] == 5 and f["run_id"] == rid
        f = await _frames(w, s, 3)
        assert [x["step"] for x in f["frames"]] == [3, 4] and f["next"] == 5
        f = await _frames(w, s, 9)
        assert f["frames"] == [] and f["next"] == 5
        # a late repeat of the agent adds nothing to an ended run
        w.send(a, "frame", run_id=rid, seq=5, data={"step": 5})
        assert sim.frames is None and sim.job.frames == 5
        assert len((await _frames(w, s))["frames"]) == 5
    finally:
        await w.stop()


async def test_a_restart_loads_no_ended_frames_and_cuts_a_torn_active_tail(tmp_path):
    w = await World(tmp_path).start()
    s_done, a, _, c = await _ended_run_with_frames(w, 3)
    s_on = await w.sim(secs=1)
    await w.run(s_on)
    op = await c.next("run")
    w.send(a, "started", run_id=op["run_id"], pid=3)
    for i in range(2):
        w.send(a, "frame", run_id=op["run_id"], seq=i, data={"step": i})
    p = w.sv.sim_store._path(w.sv.sim_store.by_id[s_on], ".frames.jsonl")
    await w.stop()
    # a crash tore the running run's last line
    with open(p, "ab") as f:
        f.write(b'{"step": 2, "x"')
    w = World(tmp_path)
    w.user = w.sv.users.get("alice")
    w.push = Push(w.sv.hub, w.user)
    w.sv.agents.load()
    w.sv.runs.recover(w.sv.sim_store.load())
    try:
        done = w.sv.sim_store.by_id[s_done]
        assert done.frames is None and done.job.frames == 3
        assert [x["step"] for x in (await _frames(w, s_done))["frames"]] == [0, 1, 2]
        on = w.sv.sim_store.by_id[s_on]
        assert on.job.status == job.LOST
        assert len(on.frames) == 2 and on.job.frames == 2
        assert p.read_bytes().endswith(b'{"step":1}\n')
        # what the agent sends again follows the whole lines
        assert w.sv.sim_store.add_frame(on, 2, {"step": 2})
        assert [x["step"] for x in (await _frames(w, s_on))["frames"]] == [0, 1, 2]
        assert p.read_bytes().count(b"\n") == 3
    finally:
        await w.stop()
