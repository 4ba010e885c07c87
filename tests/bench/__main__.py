"""``python -m tests.bench``: measure, print the table, exit 1 if anything failed.

Bounded in count and in time: each row takes at most its repetitions or its
budget (whichever ends first, with a few samples at least), every wait has a
timeout, and the whole run is cut off at `TOTAL_SECS`. Everything started is
stopped: supervisors by `conftest.Server.cleanup` (which kills only what ran
under their data directories), the relay and bare processes by their handles.
"""

import argparse
import asyncio
import pathlib
import shutil
import sys
import tempfile
import time
import traceback

from tests.bench import (
    clients,
    containers,
    figures,
    floors,
    lammps,
    library,
    push_bench,
    push_load,
    report,
    slurm,
    slurm_array,
    sweeps,
)
from tests.bench.report import MS, PER_SEC, Row

TOTAL_SECS = 270
#: row 13 (push to 1,000 subscribers, figure and floor) on top of that
PUSH_LOAD_SECS = 120

#: row 4: runs at once, and the local core budget that allows them
THROUGHPUT_RUNS = 40
THROUGHPUT_CORES = 8

#: row 6: runs through the fake agent, and the policy limits lifted for them
DISPATCH_RUNS = 200

#: row 5: progress messages; row 7: store writes
PUSHES = STORE_WRITES = 200

#: row 12: authenticated requests, with and without the rate limiter
RATE_REQUESTS = 400


class Bench:
    def __init__(self, tmp, only=()):
        self.tmp = tmp
        #: row numbers to measure (``--only 3,4``); empty: all
        self.only = only
        self.conftest = clients.load_conftest()
        self.leftovers = []
        self.load_before = None
        doc = floors.job_document()
        self.doc = doc
        self.start = Row(
            "1 run request -> process started",
            MS,
            "asyncio.create_subprocess_exec(sys.executable, -m, agent.codes.sleep) "
            "returning (fork+exec done), in the bench: own session, pipes, the "
            "agent's env, a cwd with params.json",
        )
        self.start.note = (
            "POST /api/simulations/{id}/run of `sleep` (local, sandbox auto; HTTP "
            "connection kept open) until the `running` push: dispatch, run op, "
            "fresh run dir, cgroup, exec of the keeper (it starts the code in the "
            "sandbox), the agent's started"
        )
        self.end = Row(
            "2 run request -> completed (sleep 0)",
            MS,
            "the same bare subprocess (secs=0) from create until its pipes are "
            "drained and it is reaped",
        )
        self.cancel = Row(
            "3 cancel request -> group gone",
            MS,
            "os.killpg(SIGTERM) of a bare `forever` (own session, after its first "
            "heartbeat) until it is reaped",
        )
        self.cancel.note = (
            "POST /api/simulations/{id}/cancel of a running `forever` (local, "
            "sandbox auto; HTTP connection kept open) until its reply, which comes "
            "at the agent's exited: the keeper SIGTERMs the run's cgroup, sees "
            "populated 0 (poll(POLLPRI); without cgroups, a /proc walk), writes its "
            "status and exits; the agent sees the exit (pidfd) and reports. "
            "Includes the cancel op and the push of the canceled job, not its "
            "durable write (the agent reports the end again after a crash)"
        )
        self.tput = Row(
            f"4 throughput, {THROUGHPUT_RUNS} sleep-0 runs at once",
            PER_SEC,
            f"the same {THROUGHPUT_RUNS} bare subprocesses, {THROUGHPUT_CORES} at a "
            "time, from the bench process",
        )
        self.push = Row(
            "5 agent progress -> /api/events push",
            MS,
            "one-way text frame (600 B) bench -> websocket relay subprocess "
            "(tests/bench/relay.py, tornado, no parsing) -> bench, on loopback",
        )
        self.dispatch = Row(
            f"6 dispatch ceiling, {DISPATCH_RUNS} runs, fake agent",
            PER_SEC,
            f"{DISPATCH_RUNS} POST /api/logout (bearer auth, same handler base, no "
            "state) to the same supervisor, same client, all submitted at once",
        )
        self.store = Row(
            f"7 store write_atomic ({len(doc) / 1024:.1f} KB job doc)",
            MS,
            "open/write/close of the same bytes in the same directory (no fsync, no rename)",
        )
        self.rate = Row(
            f"12 {RATE_REQUESTS} authenticated requests, rate limiter on",
            PER_SEC,
            f"the same {RATE_REQUESTS} POST /api/logout (bearer) to a supervisor "
            "with the limiter off, same client, all submitted at once",
        )
        self.rate.note = (
            "the limiter's rate and burst set so high that nothing is refused: "
            "what its bookkeeping costs per request"
        )
        self.push_load = Row(
            f"13 push to {push_load.SUBSCRIBERS} subscribers, {push_load.RUNS} runs "
            f"x {push_load.FRAMES_PER_SEC} frames/s",
            MS,
            "the same frames (same bytes) fanned out to the same subscribers by a "
            "bare tornado relay (tests/bench/push_load.py relay: /in?ch=X written "
            "to every /out?ch=X and /out?ch=*), same sender, same clients",
        )
        self.upload = library.upload_row()
        self.sweep = sweeps.row()
        self.local_sweep = sweeps.local_row()
        self.rows = [
            self.upload,
            self.start,
            self.end,
            self.cancel,
            self.tput,
            self.push,
            self.dispatch,
            self.store,
            self.rate,
            self.push_load,
            self.sweep,
            self.local_sweep,
        ]
        self.lammps_skipped = lammps.unavailable()
        self.lammps = [] if self.lammps_skipped else lammps.rows()
        self.append = None if self.lammps_skipped else lammps.append_row()
        self.analysis = None if self.lammps_skipped else lammps.analysis_row()
        #: the real-agent rows of issue 11
        self.codes = [
            *self.lammps,
            *(x for x in (self.append, self.analysis) if x is not None),
        ]
        self.rows += self.codes
        self.docker_skipped = containers.unavailable()
        if not self.docker_skipped:
            f = (
                "a bare `docker run --rm --network none <agent image> true` through "
                "the Docker SDK (create, start, wait, remove), same engine"
            )
            self.cold = Row("8 docker: run request -> running, cold", MS, f)
            self.warm = Row("9 docker: run request -> running, warm", MS, f)
            self.cold.note = (
                "a new container each time (the previous one killed and removed "
                "first): create, start, the agent connects over the unix socket, "
                "then the run op; `sleep` secs=0"
            )
            self.warm.note = "the user's container is up and its agent connected"
            self.rows += [self.cold, self.warm]
        self.slurm_skipped = slurm.unavailable()
        if not self.slurm_skipped:
            self.batch_run = Row(
                "10 sbatch: run request -> Slurm job RUNNING",
                MS,
                "a bare `sbatch --parsable --output=/dev/null --wrap 'sleep 300'` "
                "as the site's user, from its start until `squeue -j ID -t all` "
                f"(polled every {slurm.POLL_SECS * 1000:.0f} ms, one squeue "
                "process each) says RUNNING",
            )
            self.batch_cancel = Row(
                "11 sbatch: cancel request -> Slurm job gone",
                MS,
                "`scancel ID` of that bare job as the site's user, from its start "
                "until `squeue` (polled the same way) shows the job no longer "
                "PENDING/RUNNING/COMPLETING",
            )
            self.batch_run.note = (
                "`forever`, 1 core, on the test site's Slurm (tests/hpc_site.py), "
                "the admin signed in through sshd with a one-time code beforehand "
                "(agent on the login node connected): time from the POST of the "
                "run request (driver sbatch) to the `job` push on the admin "
                "/api/events websocket whose batch.state is RUNNING (the agent's "
                "sbatch, then its squeue rounds: at once after the submission, "
                "then every 0.25 s for 3 s after a submission or a change, "
                "doubling after that while nothing changes). "
                "Slurm starts a pending job only in a scheduling pass (here the "
                "main scheduler's or the backfill's, each once a second at a fixed "
                "phase; none at submission), so figure and floor both hold a wait "
                "of 0-1 s; each sample (both sides) begins after an untimed "
                f"random pause of 0-{slurm.PHASE_SECS:g} s so that neither side "
                "locks onto the pass's phase"
            )
            self.batch_cancel.note = (
                "the same run, canceled as soon as the RUNNING push arrived: time "
                "of POST /api/simulations/{id}/cancel until its reply, which "
                "comes once the agent's squeue (0.05 s apart while a cancel "
                "waits) saw Slurm end the job; squeue is checked afterwards"
            )
            self.batch_stage = Row(
                f"19 sbatch: library file staged, {slurm.STAGE_MIB} MiB (MiB/s)",
                PER_SEC,
                "scp of the same bytes to the same sshd as the site's user "
                "(password and one-time code through SSH_ASKPASS), connection "
                "and authentication included",
            )
            self.batch_stage.note = (
                "new bytes each sample (no cache hit): POST run of checksum "
                "(driver sbatch) until the job push whose wait says the file "
                "is all on the login node: the run op, the agent's 1 MiB "
                "library_want requests (4 in flight) over its websocket, each "
                "written and hashed in order into its cache"
            )
            self.batch_array = slurm_array.row()
            self.rows += [
                self.batch_run,
                self.batch_cancel,
                self.batch_stage,
                self.batch_array,
            ]
        self.tput.note = (
            f"supervisor: local_cores={THROUGHPUT_CORES}, admin on the premium plan "
            f"(8 running); {THROUGHPUT_RUNS} fresh simulations per repetition; time "
            "from the first POST to the last `completed` push on one admin "
            "/api/events websocket"
        )
        self.dispatch.note = (
            "local_cores and max_running set to the run count so policy never "
            "queues; the fake agent answers each run op at once with started and "
            "exited; time from the first POST to the last `completed` push"
        )

    async def _measure(self, rows, coro):
        """Await `coro`; a failure marks `rows` failed instead of stopping the bench."""
        try:
            return await coro
        except asyncio.CancelledError:
            for r in rows:
                r.error = r.error or "cut off by the bench's time limit"
            raise
        except Exception as e:
            m = f"{type(e).__name__}: {e}"
            if not isinstance(e, report.BenchError):
                m += "\n" + traceback.format_exc()
            for r in rows:
                r.error = r.error or m
            return None

    def _wanted(self, *rows):
        return not self.only or any(int(r.name.split()[0]) in self.only for r in rows)

    async def run(self):
        if self.only:
            self.rows = [r for r in self.rows if self._wanted(r)]
        if self._wanted(self.store):
            await self._measure([self.store], self._store())
        if self._wanted(self.upload):
            await self._measure(
                [self.upload],
                library.measure_upload(
                    self.conftest, self.tmp, self.upload, self.leftovers
                ),
            )
        if self._wanted(self.rate):
            await self._measure([self.rate], self._rate())
        if self._wanted(
            self.start, self.end, self.cancel, self.tput, self.local_sweep, *self.codes
        ):
            await self._real_agent()
        if self._wanted(self.push, self.dispatch):
            await self._fake_agent()
        if self._wanted(self.sweep):
            await self._measure(
                [self.sweep],
                sweeps.measure(self.conftest, self.tmp, self.sweep, self.leftovers),
            )
        if self._wanted(self.push_load):
            await self._measure([self.push_load], self._push_load())
        if not self.docker_skipped and self._wanted(self.cold):
            await self._docker()
        if not self.slurm_skipped and self._wanted(
            self.batch_run, self.batch_stage, self.batch_array
        ):
            await self._slurm()

    async def _rate(self):
        on = figures._Bench(
            self.conftest, self.tmp / "rate-on", rate_per_sec=1e9, rate_burst=10**9
        )
        off = figures._Bench(self.conftest, self.tmp / "rate-off")
        try:
            await on.start()
            await off.start()
            await floors.http_posts(on.api, 20)
            await floors.http_posts(off.api, 20)
            self.rate.floor, self.rate.figure = await report.paired(
                lambda: floors.http_posts(off.api, RATE_REQUESTS),
                lambda: floors.http_posts(on.api, RATE_REQUESTS),
                7,
                30,
                3,
            )
        finally:
            for b in (on, off):
                self.leftovers += await b.cleanup()

    async def _store(self):
        a, p = await asyncio.to_thread(
            floors.store_writes, self.tmp / "store", self.doc, STORE_WRITES, 10
        )
        self.store.figure, self.store.floor = a, p

    async def _real_agent(self):
        rows = [self.start, self.end, self.cancel, self.tput, self.local_sweep]
        rows += self.codes
        b = figures.RealAgentBench(self.conftest, self.tmp / "real", THROUGHPUT_CORES)
        try:
            if await self._measure(rows, b.start()) is None:
                return
            if self._wanted(self.start, self.end):
                await self._measure([self.start, self.end], self._start_end(b))
            if self._wanted(self.cancel):
                await self._measure([self.cancel], self._cancel(b))
            if self._wanted(self.tput):
                await self._measure([self.tput], self._throughput(b))
            if self._wanted(self.local_sweep):
                await self._measure(
                    [self.local_sweep],
                    sweeps.measure_local(b, self.tmp, self.local_sweep),
                )
            for n, r in enumerate(self.lammps, 1):
                if self._wanted(r):
                    await self._measure([r], lammps.measure(b, self.tmp, r, n))
            if self.append and self._wanted(self.append):
                a = self.append
                await self._measure([a], lammps.measure_append(b, self.tmp, a))
            if self.analysis and self._wanted(self.analysis):
                a = self.analysis
                await self._measure([a], lammps.measure_analysis(b, self.tmp, a))
        finally:
            self.leftovers += await b.cleanup()

    async def _start_end(self, b):
        d = floors.run_dir(self.tmp / "floor", "sleep", {"secs": 0})
        (sid,) = await b.api.create_sims(1, "sleep", {"secs": 0})
        # warm-up: starts the agent, fills the page cache
        await floors.sleep_spawn_and_exit(d)
        await b.sleep_run(sid)
        fl, fi = await report.paired(
            lambda: floors.sleep_spawn_and_exit(d), lambda: b.sleep_run(sid), 20, 20
        )
        self.start.floor = [x[0] for x in fl]
        self.end.floor = [x[1] for x in fl]
        self.start.figure = [x[0] for x in fi]
        self.end.figure = [x[1] for x in fi]

    async def _cancel(self, b):
        d = floors.run_dir(self.tmp / "floor", "forever", {})
        (sid,) = await b.api.create_sims(1, "forever", {})
        self.cancel.floor, self.cancel.figure = await report.paired(
            lambda: floors.forever_kill(d), lambda: b.cancel_run(sid), 10, 20
        )

    async def _throughput(self, b):
        d = floors.run_dir(self.tmp / "floor", "sleep", {"secs": 0})
        fl, fi = await report.paired(
            lambda: floors.sleep_throughput(d, THROUGHPUT_RUNS, THROUGHPUT_CORES),
            lambda: b.throughput(THROUGHPUT_RUNS),
            5,
            30,
            2,
        )
        self.tput.floor = fl
        self.tput.figure = [x[0] for x in fi]
        s = report.median([x[1] for x in fi]) * 1000
        a = report.median([x[2] for x in fi]) * 1000
        n = report.median([x[3] for x in fi])
        self.tput.note += (
            f". CPU per run beyond the code's own: supervisor {s:.1f} ms, "
            f"agent {a:.1f} ms; {n:.1f} pushes per run on the admin websocket"
        )

    async def _fake_agent(self):
        rows = [self.push, self.dispatch]
        b = figures.FakeAgentBench(self.conftest, self.tmp / "fake", DISPATCH_RUNS)
        try:
            if await self._measure(rows, b.start()) is None:
                return
            await self._measure([self.push], self._push(b))
            await self._measure([self.dispatch], self._dispatch(b))
        finally:
            self.leftovers += await b.cleanup()

    async def _push(self, b):
        r = await floors.Relay().start()
        try:
            h = await b.hold_run()
            try:
                t = "x" * 600
                await r.one_way(t)
                await h.push()
                self.push.floor, self.push.figure = await report.paired(
                    lambda: r.one_way(t), h.push, PUSHES, 10, 20
                )
            finally:
                await h.release()
        finally:
            await r.stop()

    async def _dispatch(self, b):
        await b.logout_posts(20)
        fl, fi = await report.paired(
            lambda: b.logout_posts(DISPATCH_RUNS),
            lambda: b.dispatch_throughput(DISPATCH_RUNS),
            5,
            40,
            2,
        )
        self.dispatch.floor = [x[0] for x in fl]
        self.dispatch.figure = [x[0] for x in fi]
        cf = report.median([x[1] for x in fl]) * 1000
        c = report.median([x[1] for x in fi]) * 1000
        w = report.median([x[2] for x in fi])
        n = report.median([x[3] for x in fi])
        u = report.median([x[4] for x in fi])
        self.dispatch.note += (
            f". Supervisor CPU: {c:.2f} ms per run (floor: {cf:.2f} ms per POST), "
            f"{u:.2f} CPU-seconds per second while it ran (all its threads); "
            f"{w:.1f} durable store writes and {n:.1f} pushes per run"
        )

    async def _push_load(self):
        fl = await push_bench.floor()
        fi = await push_bench.figure(self.conftest, self.tmp / "push-load")
        self.leftovers += fi.pop("leftovers")
        self.push_load.floor = [x / 1000 for x in fl["samples_ms"]]
        self.push_load.figure = [x / 1000 for x in fi["samples_ms"]]
        self.push_load.note = push_bench.note(fi, fl)

    async def _docker(self):
        rows = [self.cold, self.warm]
        b = await self._measure(
            rows, containers.DockerBench.make(self.conftest, self.tmp / "docker")
        )
        if b is None:
            return
        try:
            if await self._measure(rows, b.start()) is None:
                return
            await self._measure(rows, containers.rows(b, self.cold, self.warm))
        finally:
            self.leftovers += await b.cleanup()

    async def _slurm(self):
        rows = [self.batch_run, self.batch_cancel, self.batch_array]
        b = await self._measure(
            rows, slurm.SlurmBench.make(self.conftest, self.tmp / "slurm")
        )
        if b is None:
            return
        try:
            if await self._measure(rows, b.start()) is None:
                return
            if self._wanted(self.batch_run):
                await self._measure(
                    rows, slurm.rows(b, self.batch_run, self.batch_cancel)
                )
            if self._wanted(self.batch_stage):
                await self._measure(
                    [self.batch_stage],
                    slurm.stage_row(b, self.batch_stage, self.tmp),
                )
            if self._wanted(self.batch_array):
                a = self.batch_array
                await self._measure(
                    [a],
                    slurm_array.measure(
                        self.conftest, self.tmp / "slurm-array", b, a, self.leftovers
                    ),
                )
        finally:
            self.leftovers += await b.cleanup()


async def _main(tmp, only):
    b = Bench(tmp, only)
    b.load_before = report.load_average()
    try:
        await asyncio.wait_for(b.run(), TOTAL_SECS + PUSH_LOAD_SECS)
    except asyncio.TimeoutError:
        for r in b.rows:
            if not (r.figure and r.floor):
                r.error = r.error or f"bench time limit of {TOTAL_SECS} s"
    return b


def main():
    p = argparse.ArgumentParser(prog="python -m tests.bench")
    p.add_argument(
        "--only",
        type=lambda v: {int(x) for x in v.split(",")},
        default=set(),
        help="measure only these rows (numbers, comma separated)",
    )
    only = p.parse_args().only
    t0 = time.monotonic()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="simvisor-bench-"))
    try:
        b = asyncio.run(_main(tmp, only))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        report.table(
            b.rows,
            "simvisor benchmarks: each figure beside its floor",
            time.monotonic() - t0,
            b.load_before,
        ),
        flush=True,
    )
    if b.lammps_skipped:
        print(f"\nlammps rows skipped: {b.lammps_skipped}", flush=True)
    if b.docker_skipped:
        print(f"\ndocker rows skipped: {b.docker_skipped}", flush=True)
    if b.slurm_skipped:
        print(f"\nsbatch rows skipped: {b.slurm_skipped}", flush=True)
    rc = 0
    if b.leftovers:
        print(f"\nprocesses left behind (killed): {b.leftovers}", flush=True)
        rc = 1
    if any(r.error or not (r.figure and r.floor) for r in b.rows):
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
