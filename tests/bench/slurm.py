"""Slurm rows: a run request until its Slurm job runs, a cancel until it is gone.

The one-machine HPC site of the tests (tests/hpc_site.py: munge, MariaDB,
slurmdbd, slurmctld, slurmd, sshd with one-time codes) and a supervisor with
that login node as its sbatch host "hpc"; the bench signs in as admin, which
starts the agent on the login node. One `forever` run of one simulation per
sample: from the run request to the ``job`` push whose ``batch.state`` is
RUNNING, then from the cancel request to its reply (sent once the agent saw
Slurm end the job). Beside them, in the same run, the floor: a bare
``sbatch --wrap 'sleep 300'`` as the site's user, ``squeue`` polled until
RUNNING, then ``scancel`` and ``squeue`` polled until the job has left
PENDING/RUNNING/COMPLETING. One job at a time (the node has 2 cores).

The site is shared state of the machine (one Slurm, fixed directories, the
one-time code counter): the rows are skipped while another session (a
pytest run, another bench) has it up; the bench starts it otherwise, and
stops it at the end.
"""

import asyncio
import json
import os
import pathlib
import pwd
import random
import secrets
import shutil
import signal
import time

import requests

from tests import hpc_site
from tests.bench import clients, figures
from tests.bench.report import BenchError, paired

#: rows 10 and 11: Slurm jobs, one at a time (each a run and its cancel)
RUNS = 10

#: the floor's squeue poll interval
POLL_SECS = 0.02

#: slurmctld starts pending jobs only in its scheduling passes (with
#: etc/hpc/slurm.conf: the main scheduler's and the backfill's, each once a
#: second at a fixed phase; none at submission): each sample
#: first waits a random part of this, untimed, so that the samples do not lock
#: onto the pass's phase (a floor and a figure of a fixed total length, taken
#: in turn, would otherwise take the same share of the wait every time)
PHASE_SECS = 1.0

#: Slurm states of a job that has not ended (squeue's %T)
ACTIVE = frozenset(("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"))


def _cmdline(pid):
    try:
        return (
            pathlib.Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
        )
    except OSError:
        return ""


def _ppid(pid):
    try:
        x = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(x[1])
    except OSError:
        return None


def unavailable():
    """Why the Slurm rows cannot run here, or None."""
    r = hpc_site.check_host()
    if r:
        return r
    # mariadbd is the one daemon of the site that stays the child of whoever
    # started it (the others detach): a live Python parent (a pytest session,
    # another bench) means the site is someone's, and starting it again would
    # kill their daemons; an orphan is a crashed session's, restarted
    m = hpc_site.Site().mariadbd.read_pid()
    p = m and _ppid(m)
    c = _cmdline(p) if p and p > 1 else ""
    if "python" in c:
        return f"the HPC site is in use by another session (pid {p}: {c.strip()[:80]})"
    return None


async def dephase():
    """Sleep a random part of `PHASE_SECS` (see there)."""
    await asyncio.sleep(random.uniform(0, PHASE_SECS))


class SlurmBench(figures._Bench):
    """A supervisor with one sbatch login node (the test site's ``prompt`` sshd)."""

    def __init__(self, conftest, data_dir, site):
        self.site = site
        #: where row 19 keeps its scp files (set by `stage_row`)
        self.data_dir_for_scp = None
        #: the agent's work directory, relative to the site user's home
        self.work_dir = f"sv-bench-{secrets.token_hex(4)}"
        pw = pwd.getpwnam(site.user)
        self._uid_gid = (pw.pw_uid, pw.pw_gid)
        s = site.sshd["prompt"]
        h = dict(
            name="hpc",
            address=site.host,
            port=s.port,
            known_hosts=s.known_hosts_line(),
            otp="prompt",
            cores=2,
            agent_command=site.install_agent(clients.ROOT / "agent"),
            work_dir=self.work_dir,
        )
        super().__init__(
            conftest,
            data_dir,
            sbatch_hosts=json.dumps([h]),
            sbatch_agent_idle_secs=600,
            agent_idle_secs=600,
        )

    @classmethod
    async def make(cls, conftest, data_dir):
        site = hpc_site.Site()
        t = asyncio.ensure_future(asyncio.to_thread(site.start))
        try:
            await asyncio.shield(t)
            return cls(conftest, data_dir, site)
        except BaseException:
            # cut off by the bench's time limit: the thread goes on; let it
            # end (bounded by the site's own timeouts) before stopping
            await asyncio.wait([t])
            await asyncio.to_thread(site.stop)
            raise

    async def start(self):
        await super().start()
        r = await self.api.call(
            "POST",
            "/sbatch/login",
            {
                "host": "hpc",
                "user": self.site.user,
                "password": self.site.password,
                "otp": self.site.otp(),
            },
            expect=200,
        )
        if r["agent"]["state"] != "connected":
            raise BenchError(f"sign-in: agent not connected: {r}")
        return self

    # --- the figure ----------------------------------------------------------

    async def run_cancel(self, sim_id):
        """One sbatch run of `forever`, canceled once Slurm runs it (after `dephase`).

        Returns:
            tuple: (seconds from the run request to the ``job`` push with
            ``batch.state`` RUNNING, seconds of the cancel request)
        """
        await dephase()
        m0 = self.events.mark()
        t0 = time.perf_counter()
        j = await self.api.call(
            "POST", f"/simulations/{sim_id}/run", {"driver": "sbatch"}, expect=202
        )
        rid = j["run_id"]

        def running(m):
            if not clients.is_job(m, sim_id) or m["job"]["run_id"] != rid:
                return False
            b = m["job"].get("batch") or {}
            return b.get("state") == "RUNNING" or m["job"]["status"] in clients.ENDED

        t, m = await self.events.wait_for(running, m0, "Slurm state RUNNING")
        if m["job"]["status"] != "running":
            raise BenchError(f"forever went {m['job']['status']}: {m['job']['error']}")
        jid = m["job"]["batch"]["job_id"]
        t1 = time.perf_counter()
        j = await self.api.call("POST", f"/simulations/{sim_id}/cancel", expect=200)
        t2 = time.perf_counter()
        if j["status"] != "canceled":
            raise BenchError(f"cancel replied status={j['status']}")
        s = await self.state(jid)
        if s in ACTIVE:
            raise BenchError(f"cancel replied but Slurm job {jid} is {s}")
        return t - t0, t2 - t1

    async def stage(self, path):
        """One sbatch run of `checksum` on new library bytes (`path`): MiB/s
        from the run request to the push that says they are all on the
        login node (the agent's last ``staging``)."""
        name = f"stage-{secrets.token_hex(4)}.bin"
        u = f"{self.server.url}/api/library/{name}"
        h = {"Authorization": "Bearer " + self.server.tokens["admin"]}
        r = await asyncio.to_thread(_put_file, u, path, h)
        if r.status_code != 201:
            raise BenchError(f"PUT {name}: {r.status_code} {r.text[:200]}")
        (sid,) = await self.api.create_sims(1, "checksum", {"data": name})
        m0 = self.events.mark()
        t0 = time.perf_counter()
        await self.api.call(
            "POST", f"/simulations/{sid}/run", {"driver": "sbatch"}, expect=202
        )

        def staged(m):
            if not clients.is_job(m, sid):
                return False
            w = m["job"].get("wait") or {}
            return (w.get("reason") == "staging" and w["done"] == w["total"]) or m[
                "job"
            ]["status"] in clients.ENDED

        t, m = await self.events.wait_for(staged, m0, "the file staged")
        if m["job"]["status"] in clients.ENDED:
            raise BenchError(f"checksum ended before staging: {m['job']}")
        await self.events.wait_for(
            lambda m: clients.is_job(m, sid, clients.ENDED), m0, "checksum's end"
        )
        await self.api.call("DELETE", f"/simulations/{sid}", expect=200)
        await asyncio.to_thread(requests.delete, u, headers=h, timeout=30)
        return os.path.getsize(path) / 2**20 / (t - t0)

    async def scp(self, path):
        """MiB/s of ``scp`` of `path` to the login node's sshd as the site's
        user (password and one-time code through SSH_ASKPASS)."""
        s = self.site.sshd["prompt"]
        d = pathlib.Path(self.data_dir_for_scp)
        kh = d / "known_hosts"
        kh.write_text(s.known_hosts_line() + "\n")
        ask = d / "askpass"
        ask.write_text(
            '#!/bin/sh\ncase "$1" in *[Oo]ne-time*|*OATH*) echo "$SV_OTP";; '
            '*) echo "$SV_PW";; esac\n'
        )
        ask.chmod(0o700)
        env = dict(
            os.environ,
            SSH_ASKPASS=str(ask),
            SSH_ASKPASS_REQUIRE="force",
            DISPLAY=":0",
            SV_PW=self.site.password,
            SV_OTP=self.site.otp(),
        )
        t0 = time.perf_counter()
        p = await asyncio.create_subprocess_exec(
            "scp",
            "-q",
            "-P",
            str(s.port),
            "-o",
            f"UserKnownHostsFile={kh}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            str(path),
            f"{self.site.user}@{self.site.host}:{self.work_dir}/scp-floor.bin",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        _, err = await asyncio.wait_for(p.communicate(), 120)
        t = time.perf_counter() - t0
        if p.returncode != 0:
            raise BenchError(f"scp failed: {err.decode()[-300:]}")
        return os.path.getsize(path) / 2**20 / t

    # --- the floor -----------------------------------------------------------

    async def as_user(self, *argv):
        """Run `argv` as the site's user (no runuser, no PAM); its stdout."""
        p = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.site.home,
            env=hpc_site._env(
                HOME=str(self.site.home), USER=self.site.user, LOGNAME=self.site.user
            ),
            user=self._uid_gid[0],
            group=self._uid_gid[1],
            extra_groups=[],
        )
        try:
            out, err = await asyncio.wait_for(p.communicate(), clients.WAIT_SECS)
        except BaseException:
            if p.returncode is None:
                p.kill()
                await p.wait()
            raise
        if p.returncode != 0:
            raise BenchError(
                f"{' '.join(argv)} exited {p.returncode}: {err.decode().strip()}"
            )
        return out.decode()

    async def state(self, job_id):
        """The job's state in squeue (``-t all``: ended ones too), or None."""
        o = await self.as_user("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T")
        return (o.split() or [None])[0]

    async def _poll(self, job_id, done, what):
        end = time.monotonic() + clients.WAIT_SECS
        while True:
            s = await self.state(job_id)
            if done(s):
                return s
            if time.monotonic() > end:
                raise BenchError(f"Slurm job {job_id} still {s}, waiting for {what}")
            await asyncio.sleep(POLL_SECS)

    async def bare_job(self):
        """A bare ``sbatch --wrap 'sleep 300'``, then ``scancel`` (after `dephase`).

        Returns:
            tuple: (seconds from sbatch's start until squeue says RUNNING,
            seconds from scancel's start until squeue shows the job ended)
        """
        await dephase()
        t0 = time.perf_counter()
        o = await self.as_user(
            "sbatch", "--parsable", "--output=/dev/null", "--wrap=sleep 300"
        )
        jid = o.strip().split(";")[0]
        try:
            s = await self._poll(
                jid, lambda s: s not in ("PENDING", "CONFIGURING"), "RUNNING"
            )
            t1 = time.perf_counter()
            if s != "RUNNING":
                raise BenchError(f"bare Slurm job {jid} went {s}")
        finally:
            t2 = time.perf_counter()
            await self.as_user("scancel", jid)
            await self._poll(jid, lambda s: s not in ACTIVE, "its end")
            t3 = time.perf_counter()
        return t1 - t0, t3 - t2

    # --- cleanup -------------------------------------------------------------

    def _agent_pid(self):
        """The login node agent's pid from its lock file, if it is still ours."""
        p = self.site.home / self.work_dir / "agent" / "agent.lock"
        try:
            pid = int(p.read_text().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and self.work_dir in _cmdline(pid) else None

    def _site_cleanup(self):
        """The agent, the user's jobs, the work directory, the site."""
        left = []
        try:
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
            left += [f"Slurm job {j}" for j in self.site.jobs()]
            self.site.cancel_all(wait_secs=10)
        finally:
            shutil.rmtree(self.site.home / self.work_dir, ignore_errors=True)
            self.site.stop()
        return left

    async def cleanup(self):
        left = []
        try:
            # `Server.cleanup` kills the agents through the API first
            left += await super().cleanup()
        finally:
            left += await asyncio.to_thread(self._site_cleanup)
        return left


def _put_file(url, path, headers):
    with open(path, "rb") as f:
        return requests.put(url, data=f, headers=headers, timeout=300)


#: row 19: the library file's size
STAGE_MIB = 64


async def stage_row(b, row, tmp):
    """Row 19 through `b`: staging new library bytes beside scp of them."""
    b.data_dir_for_scp = tmp
    fl, fi = [], []
    for i in range(4):
        f = tmp / f"stage-{i}.bin"
        with open(f, "wb") as o:
            for _ in range(STAGE_MIB):
                o.write(os.urandom(2**20))
        try:
            fl.append(await b.scp(f))
            fi.append(await b.stage(f))
        finally:
            f.unlink(missing_ok=True)
    row.floor, row.figure = fl, fi


async def rows(b, run_row, cancel_row):
    """Rows 10 and 11 through `b` (a started `SlurmBench`)."""
    (sid,) = await b.api.create_sims(1, "forever", {})
    # warm-up: the agent's first submission, Slurm's first job of the site
    await b.bare_job()
    await b.run_cancel(sid)
    fl, fi = await paired(b.bare_job, lambda: b.run_cancel(sid), RUNS, 35)
    run_row.floor = [x[0] for x in fl]
    cancel_row.floor = [x[1] for x in fl]
    run_row.figure = [x[0] for x in fi]
    cancel_row.figure = [x[1] for x in fi]
