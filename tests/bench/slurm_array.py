"""Row 22: a sweep of 100 members on Slurm as one job array, to all RUNNING (issue 13).

The figure: one ``POST /api/sweeps`` of `MEMBERS` members of ``sleep``
(secs 60, driver sbatch) until the last member's ``job`` push whose
``batch.state`` is RUNNING: the supervisor makes the members, hands them
all over at once and sends their run ops; the agent on the login node
prepares each run directory, submits them as one ``sbatch --array``
(`agent.slurm_array`: it waits for a quiet 0.2 s after the last op) and
follows the 100 tasks with one ``squeue -r`` a round. The sample checks the
members are the tasks of one array, waits (untimed) until each member's code
reported progress, then cancels the sweep (one scancel; its time is in the
note) and deletes it. The floor: one bare ``sbatch --array=0-99 --wrap
'echo started; sleep 60'`` as the site's user, ``squeue -r`` polled until
all 100 tasks are RUNNING, then (untimed) until each wrote its output, then
``scancel``. Slurm says RUNNING once it gave a task its node, before the
task's script started; a cancel then races the launch (on a loaded machine
Slurm may requeue such a task, held), hence the wait before each cancel.

Both run in the test site's ``wide`` partition (`hpc_site.Site.wide_partition`:
50 jobs share each of the node's 2 cores), so that 100 tasks run at once,
with a supervisor of their own (a core budget and running slots for 100
members) on the site the other Slurm rows started.
"""

import asyncio
import json
import os
import pwd
import secrets
import shutil
import signal
import time

from tests.bench import clients, figures, slurm
from tests.bench.report import MS, BenchError, Row, median, paired

#: members of the sweep, tasks of the bare array
MEMBERS = 100

#: the floor's squeue poll interval
POLL_SECS = slurm.POLL_SECS


def row():
    r = Row(
        f"22 sbatch: sweep of {MEMBERS} -> one job array all RUNNING",
        MS,
        f"a bare `sbatch --parsable --array=0-{MEMBERS - 1} --output=DIR/%a.out "
        "--wrap 'echo started; sleep 60'` as the site's user, from its start until `squeue "
        f"-r -t RUNNING -j ID` (polled every {POLL_SECS * 1000:.0f} ms) lists "
        f"all {MEMBERS} tasks",
    )
    r.note = (
        f"POST /api/sweeps of `sleep` secs=60 x {MEMBERS} (driver sbatch; plan "
        f"slots and the host's core budget {MEMBERS}) until the last member's "
        "job push with batch.state RUNNING on the admin /api/events: the "
        "members made, handed over at once, their run ops; the agent prepares "
        "each run directory, submits one `sbatch --array` once no run op came "
        "for 0.2 s, and follows the tasks with one `squeue -r` a round (0.25 s "
        "apart for 3 s after the submission). Both in the site's `wide` "
        "partition (50 jobs share each of the node's 2 cores); each sample "
        f"after an untimed random pause of 0-{slurm.PHASE_SECS:g} s (Slurm's "
        "scheduling passes, see rows 10-11), and on both sides an untimed wait "
        "until every task's script started before the cancel (a cancel that "
        "races a task's launch can leave it requeued, held)"
    )
    return r


class ArrayBench(slurm.SlurmBench):
    """A supervisor whose sbatch host takes a sweep of `MEMBERS` at once.

    On the site of another `slurm.SlurmBench`, which starts and stops it.
    """

    def __init__(self, conftest, data_dir, site):
        # SlurmBench's attributes, with a host of its own
        self.site = site
        self.data_dir_for_scp = None
        self.work_dir = f"sv-bench-array-{secrets.token_hex(4)}"
        pw = pwd.getpwnam(site.user)
        self._uid_gid = (pw.pw_uid, pw.pw_gid)
        s = site.sshd["prompt"]
        h = dict(
            name="hpc",
            address=site.host,
            port=s.port,
            known_hosts=s.known_hosts_line(),
            otp="prompt",
            cores=2 * MEMBERS,
            partition=site.wide_partition,
            agent_command=site.install_agent(clients.ROOT / "agent"),
            work_dir=self.work_dir,
        )
        figures._Bench.__init__(
            self,
            conftest,
            data_dir,
            sbatch_hosts=json.dumps([h]),
            sbatch_agent_idle_secs=600,
            agent_idle_secs=600,
            basic_max_running=MEMBERS,
            premium_max_running=MEMBERS,
        )

    async def sweep_running(self):
        """One sweep until all its members are RUNNING (after `slurm.dephase`).

        Returns:
            tuple: (seconds from the POST to the last RUNNING push, seconds
            of the sweep's cancel request)
        """
        await slurm.dephase()
        m0 = self.events.mark()
        t0 = time.perf_counter()
        s = await self.api.call(
            "POST",
            "/sweeps",
            {"code": "sleep", "axes": {"secs": [60] * MEMBERS}, "driver": "sbatch"},
            expect=202,
        )
        d = await self.api.call("GET", f"/sweeps/{s['id']}", expect=200)
        left = {m["simulation"] for m in d["members"]}
        jobs = {}
        ended = []

        def running(m):
            if m.get("type") != "job" or m["simulation"] not in left:
                return False
            j = m["job"]
            if j["status"] in clients.ENDED:
                ended.append(j)
                return True
            if (j.get("batch") or {}).get("state") == "RUNNING":
                left.discard(m["simulation"])
                jobs[m["simulation"]] = j["batch"]["job_id"]
            return not left

        t, _ = await self.events.wait_for(running, m0, f"{MEMBERS} members RUNNING")
        if ended:
            raise BenchError(f"a member ended {ended[0]['status']}: {ended[0]}")
        a = {i.split("_")[0] for i in jobs.values()}
        if len(a) != 1:
            raise BenchError(f"the members are in {len(a)} Slurm jobs: {sorted(a)}")
        # untimed: each task's script has started (see the module doc)
        left = set(jobs)

        def started(m):
            if m.get("type") == "job" and m["simulation"] in left:
                if m["job"]["progress"] or m["job"]["status"] in clients.ENDED:
                    left.discard(m["simulation"])
            return not left

        await self.events.wait_for(started, m0, "each member's progress")
        t1 = time.perf_counter()
        await self.api.call("POST", f"/sweeps/{s['id']}/cancel", {}, expect=200)
        t2 = time.perf_counter()
        await self._gone(a.pop())
        await self.api.call("DELETE", f"/sweeps/{s['id']}", expect=200)
        return t - t0, t2 - t1

    async def bare_array(self):
        """A bare ``sbatch --array`` of `MEMBERS` tasks until all RUNNING (after
        `slurm.dephase`); the seconds."""
        d = self.site.home / self.work_dir / f"floor-{secrets.token_hex(4)}"
        await self.as_user("mkdir", str(d))
        await slurm.dephase()
        t0 = time.perf_counter()
        o = await self.as_user(
            "sbatch",
            "--parsable",
            f"--partition={self.site.wide_partition}",
            f"--array=0-{MEMBERS - 1}",
            f"--output={d}/%a.out",
            "--wrap=echo started; sleep 60",
        )
        jid = o.strip().split(";")[0]
        try:
            end = time.monotonic() + clients.WAIT_SECS
            while True:
                n = len(await self._tasks(jid, "RUNNING"))
                if n == MEMBERS:
                    break
                if time.monotonic() > end:
                    raise BenchError(f"bare array {jid}: {n} of {MEMBERS} RUNNING")
                await asyncio.sleep(POLL_SECS)
            t = time.perf_counter()
            # untimed: each task's script has started (see the module doc)
            while not all(
                (d / f"{i}.out").exists() and (d / f"{i}.out").stat().st_size
                for i in range(MEMBERS)
            ):
                if time.monotonic() > end:
                    raise BenchError(f"bare array {jid}: not every task started")
                await asyncio.sleep(POLL_SECS)
        finally:
            await self.as_user("scancel", jid)
            await self._gone(jid)
            shutil.rmtree(d, ignore_errors=True)
        return t - t0

    async def _tasks(self, job_id, states):
        o = await self.as_user(
            "squeue", "-h", "-r", "-j", job_id, "-t", states, "-o", "%i"
        )
        return o.split()

    async def _gone(self, job_id):
        """Wait until no task of array `job_id` is pending, running or completing."""
        end = time.monotonic() + clients.WAIT_SECS
        while t := await self._tasks(job_id, ",".join(sorted(slurm.ACTIVE))):
            if time.monotonic() > end:
                # the next sample must not share the node with them
                await self.as_user("scancel", job_id)
                raise BenchError(f"Slurm job {job_id} still has tasks: {t[:10]}")
            await asyncio.sleep(POLL_SECS)

    def _site_cleanup(self):
        """The agent and the work directory; the site is the other bench's."""
        left = []
        end = time.monotonic() + 10
        while (p := self._agent_pid()) and time.monotonic() < end:
            time.sleep(0.05)
        if p:
            # the supervisor's kill should have made it exit
            left.append(f"sbatch agent {p}")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.site.home / self.work_dir, ignore_errors=True)
        return left


async def measure(conftest, data_dir, site_bench, r, leftovers):
    """Row 22 on the site of `site_bench` (a started `slurm.SlurmBench`)."""
    b = ArrayBench(conftest, data_dir, site_bench.site)
    try:
        await b.start()
        # warm-up: the agent's first array, the page cache of the run root
        await b.bare_array()
        await b.sweep_running()
        fl, fi = await paired(b.bare_array, b.sweep_running, 5, 60)
        r.floor = fl
        r.figure = [x[0] for x in fi]
        c = median([x[1] for x in fi]) * 1000
        r.note += (
            f". The sweep's cancel (POST /api/sweeps/ID/cancel until its reply: "
            f"one scancel of the array, every member confirmed ended): {c:.0f} ms"
        )
    finally:
        leftovers += await b.cleanup()
