"""Sweeps: many runs of one code over parameter axes, made by one request, followed as one.

A sweep (``POST /api/sweeps``) expands its axes (`sweep_axes`: every
member checked before anything is made), then makes one ordinary simulation
per member (``sweep: {id, index}``), with all a simulation has. Its document
(``db/sweeps/<user>/<id>.json``) has the request, the members' simulation
ids, whether it was canceled, and which members a retry asked for again.

Members are handed to the dispatch (`runs.Runs.run`, as a user's run
request is) a few at a time: at most ``max_parallel`` of them, and at most
twice the user's running slots, are queued, starting or running at once; the
next one goes as one ends. The resources' queue then holds a few of a
sweep's members, not thousands, and the round-robin across users gives
another user's run its turn whatever the size of the sweep. A member not
handed over yet is ``pending`` (its job is ``missing``: it never ran). On
sbatch they are one Slurm job array (`sweep_arrays`).

Cancel ends every member (those not handed over ``canceled`` without
running, the others confirmed gone). Retry hands the failed members (error,
timed out, canceled) over again. Delete cancels, then deletes them all.

Changes are pushed as ``{"type": "sweep", "sweep": SUMMARY}``, at most
every `PUSH_SECS` per sweep, beside each member's own ``job`` pushes.
"""

import asyncio
import collections
import json
import secrets
import time

from pykern.pkdebug import pkdlog

from supervisor import errors, events, job, sweep_axes, tasks
from supervisor.sims import check_name
from supervisor.sweep_arrays import array_of, in_flight_limit

#: a sweep's summary is pushed at most this often
PUSH_SECS = 0.25

#: members a sweep may have in flight, in running slots of its user's plan
_SLOTS_AHEAD = 2

#: failed members, which a retry runs again
RETRIED = frozenset((job.ERROR, job.TIMED_OUT, job.CANCELED))


class Sweep:
    """One sweep: its request, its members in order, and what goes on."""

    def __init__(self, doc):
        self.id = doc["id"]
        self.user = doc["user"]
        self.name = doc["name"]
        self.code = doc["code"]
        self.params = doc["params"]
        self.axes = doc["axes"]
        self.combine = doc["combine"]
        self.cores = doc["cores"]
        self.driver = doc["driver"]
        self.max_parallel = doc.get("max_parallel")
        self.created = doc["created"]
        #: the members' simulation ids, by index
        self.members = list(doc.get("members", ()))
        self.canceled = doc.get("canceled", False)
        #: members a retry asked for again, and when: those queued before
        #: then are still to be handed over
        self.retry = set(doc.get("retry", ()))
        self.retry_at = doc.get("retry_at")
        #: member indices to hand over, in order (`todo_set`: the same)
        self.todo = collections.deque()
        self.todo_set = set()
        #: simulation ids of members queued, starting or running
        self.active = set()
        #: hand-overs under way (`Runs.run` not returned yet): sim id -> task
        self.feeding = {}
        self.deleted = False
        self.push_timer = None
        #: when it last changed: a client keeps the newest summary it saw
        self.updated = time.time()

    def to_doc(self):
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "code": self.code,
            "params": self.params,
            "axes": self.axes,
            "combine": self.combine,
            "cores": self.cores,
            "driver": self.driver,
            "max_parallel": self.max_parallel,
            "created": self.created,
            "members": self.members,
            "canceled": self.canceled,
            "retry": sorted(self.retry),
            "retry_at": self.retry_at,
        }

    def add_todo(self, indices):
        for i in indices:
            if i not in self.todo_set:
                self.todo_set.add(i)
                self.todo.append(i)

    def pkdebug_str(self):
        return f"Sweep({self.user}/{self.id} members={len(self.members)})"


class Sweeps:
    def __init__(self, cfg, store, sim_store, sims, runs, catalog, users, hub):
        self._cfg = cfg
        self._store = store
        self._sim_store = sim_store
        self._sims = sims
        self._runs = runs
        self._catalog = catalog
        self._users = users
        self._hub = hub
        self.by_id = {}
        self._tasks = tasks.Tasks("sweeps")
        runs.watch_jobs(self._member_changed, lambda s: array_of(self.by_id, s))

    # --- load and lookup -------------------------------------------------------

    def load(self):
        """The stored sweeps (after the simulations), and what each has to do."""
        for _, d in self._store.load_all("sweeps"):
            w = Sweep(d)
            self.by_id[w.id] = w
            for i, sid in enumerate(w.members):
                s = self._sim_store.by_id.get(sid)
                if s is None:
                    continue
                if s.job.status in job.ACTIVE:
                    w.active.add(sid)
                elif not w.canceled and _due(w, i, s):
                    w.add_todo((i,))

    def start(self):
        """Hand members over again (the loop runs)."""
        for w in self.by_id.values():
            self._feed(w)

    def get(self, user, sweep_id):
        """The sweep if `user` may see it; NotFound otherwise (never 403)."""
        w = self.by_id.get(sweep_id) if isinstance(sweep_id, str) else None
        if w is None or (w.user != user.name and not user.is_admin()):
            raise errors.NotFound("unknown_sweep", f"no sweep {sweep_id}")
        return w

    def list(self, user):
        return [
            self.summary(w)
            for w in sorted(self.by_id.values(), key=lambda w: w.created)
            if w.user == user.name
        ]

    def snapshot(self, user):
        """The sweep messages a new events subscriber gets first (frames)."""
        for w in list(self.by_id.values()):
            if not w.deleted and (w.user == user.name or user.is_admin()):
                yield events.frame(events.dumps(self._message(w)))

    # --- create ----------------------------------------------------------------

    async def create(self, user, body):
        c = self._catalog.get(body.get("code"))
        members = sweep_axes.expand(
            c,
            body.get("params"),
            body["axes"],
            body.get("combine", "grid"),
            self._cfg.sweep_max_members,
        )
        self._runs.check_request(user, c.name, body.get("cores"), body.get("driver"))
        for i, p in enumerate(members):
            try:
                self._sims.check_sources(user, c, p)
            except errors.BadInput as e:
                raise errors.BadInput(e.code, f"member {i}: {e.message}") from e
        m = self._users.plan_of(user.name).max_simulations
        n = len(self._sim_store.for_user(user.name))
        if n + len(members) > m:
            raise errors.Conflict(
                "too_many_simulations",
                f"your plan keeps at most {m} simulations: you have {n}, and the"
                f" sweep has {len(members)} members",
            )
        now = time.time()
        axes = sweep_axes.describe(body["axes"], c, self._cfg.sweep_max_members)
        w = Sweep(
            {
                "id": secrets.token_hex(6),
                "user": user.name,
                "name": check_name(body.get("name") or f"{c.title} sweep"),
                "code": c.name,
                "params": c.check_params(body.get("params") or {}),
                "axes": axes,
                "combine": body.get("combine", "grid"),
                "cores": body.get("cores") or 1,
                "driver": body.get("driver") or self._cfg.default_driver,
                "max_parallel": body.get("max_parallel"),
                "created": now,
            }
        )
        names = [a["name"] for a in axes]
        sims = []
        for i, p in enumerate(members):
            x = ", ".join(f"{k}={json.dumps(p[k])}" for k in names)
            s = self._sim_store.create(
                user,
                c.name,
                sweep_axes.member_name(f"{w.name} #{i} ({x})"),
                p,
                sweep={"id": w.id, "index": i},
                now=now,
            )
            sims.append(s)
            w.members.append(s.id)
        self.by_id[w.id] = w
        try:
            await asyncio.gather(
                self._save(w), *(self._sim_store.save(s) for s in sims)
            )
        except OSError:
            # refused (a full disk: 507): nothing is kept, nor written later
            self.by_id.pop(w.id, None)
            w.deleted = True
            for s in sims:
                if not s.deleted:
                    self._sim_store.delete(s)
            self._store.delete(self._key(w))
            raise
        for s in sims:
            self._sims.publish(s)
        w.add_todo(range(len(sims)))
        pkdlog("{} created code={} cores={}", w, w.code, w.cores)
        self._feed(w)
        self._push(w)
        return self.summary(w)

    # --- handing members over --------------------------------------------------

    def _limit(self, w):
        s = self._users.plan_of(w.user).max_running
        b, m = self._runs.is_batch(w.driver), w.max_parallel
        return in_flight_limit(s, _SLOTS_AHEAD, m, bool(w.active or w.feeding), b)

    def _feed(self, w):
        """Hand members over while the sweep has room in flight."""
        if w.canceled or w.deleted:
            return
        m = self._limit(w)
        while w.todo and len(w.active) + len(w.feeding) < m:
            i = w.todo.popleft()
            w.todo_set.discard(i)
            s = self._sim_store.by_id.get(w.members[i])
            # run meanwhile by its user (or deleted): not again
            if s is None or s.deleted or not _due(w, i, s):
                continue
            w.feeding[s.id] = self._tasks.spawn(self._hand_over(w, s))

    async def _hand_over(self, w, sim):
        try:
            u = self._users.get(w.user)
            if u is None:
                raise errors.Conflict("unknown_user", f"user {w.user} is gone")
            await self._runs.run(u, sim, w.cores, w.driver)
        except errors.Error as e:
            # refused at its turn (the plan's stored bytes, a file deleted...)
            pkdlog("{} member={} refused error={}", w, sim.id, e)
            if sim.job.status == job.MISSING and not sim.deleted:
                sim.job.never_ran(job.ERROR, time.time(), str(e))
                self._runs.changed(sim)
        finally:
            w.feeding.pop(sim.id, None)
        if w.canceled and sim.run is not None:
            # canceled while it was handed over
            await self._runs.cancel(sim, error="its sweep was canceled")
        self._feed(w)
        self._push(w)

    def _member_changed(self, sim):
        """A member's job changed (`runs.Runs.publish_job`)."""
        w = self.by_id.get(sim.sweep["id"])
        if w is None or w.members[sim.sweep["index"]] != sim.id:
            return
        if sim.job.status in job.ACTIVE:
            w.active.add(sim.id)
        elif sim.id in w.active:
            w.active.discard(sim.id)
            self._feed(w)
        self._push(w)

    # --- cancel, retry, delete -------------------------------------------------

    async def cancel(self, user, sweep_id, members=None):
        """End every member, or those of `members` (indices), those running
        confirmed gone; the summary."""
        w = self.get(user, sweep_id)
        await (self._cancel(w) if members is None else self._cancel_some(w, members))
        return self.summary(w)

    async def _cancel_some(self, w, indices):
        """End members `indices` only; the sweep goes on with the others."""
        n = len(w.members)
        if x := [i for i in indices if not 0 <= i < n]:
            raise errors.BadInput(
                "bad_members", f"sweep {w.id} has members 0 to {n - 1}, not {x[0]}"
            )
        now = time.time()
        ss = []
        for i in dict.fromkeys(indices):
            w.todo_set.discard(i)
            w.retry.discard(i)
            s = self._sim_store.by_id.get(w.members[i])
            if s is not None and s.job.status == job.MISSING and s.id not in w.feeding:
                s.job.never_ran(job.CANCELED, now, "canceled before it ran")
                self._runs.changed(s)
            elif s is not None:
                ss.append(s)
        f = self._save(w)
        await asyncio.gather(
            *(w.feeding[s.id] for s in ss if s.id in w.feeding), return_exceptions=True
        )
        await asyncio.gather(*(self._runs.cancel(s) for s in ss))
        self._push(w)
        await f

    async def _cancel(self, w):
        w.canceled = True
        self._push(w)
        w.todo.clear()
        w.todo_set.clear()
        w.retry.clear()
        f = self._save(w)
        now = time.time()
        for sid in w.members:
            s = self._sim_store.by_id.get(sid)
            if s is not None and s.job.status == job.MISSING:
                s.job.never_ran(
                    job.CANCELED, now, "its sweep was canceled before it ran"
                )
                self._runs.changed(s)
        # at once (one scancel on Slurm); hand-overs end by canceling theirs
        h = asyncio.gather(*w.feeding.values(), return_exceptions=True)
        ss = [s for sid in list(w.active) if (s := self._sim_store.by_id.get(sid))]
        await asyncio.gather(
            *(self._runs.cancel(s, error="its sweep was canceled") for s in ss)
        )
        await h
        self._push(w)
        await f

    async def retry(self, user, sweep_id):
        """Run the failed members again; the summary and how many."""
        w = self.get(user, sweep_id)
        failed = [
            i
            for i, sid in enumerate(w.members)
            if (s := self._sim_store.by_id.get(sid)) is not None
            and s.job.status in RETRIED
        ]
        w.canceled = False
        # an earlier retry's members it handed over already are not asked
        # for again by this one's later time (one canceled by its user since
        # must not run again at a restart): only those still to go stay
        w.retry = set(failed) | {
            i
            for i in w.retry
            if (s := self._sim_store.by_id.get(w.members[i])) and _due(w, i, s)
        }
        w.retry_at = time.time()
        self._push(w)
        await self._save(w)
        w.add_todo(failed)
        self._feed(w)
        return dict(self.summary(w), retried=len(failed))

    async def delete(self, user, sweep_id):
        """Cancel, then delete every member's simulation and the sweep."""
        w = self.get(user, sweep_id)
        await self._cancel(w)
        w.deleted = True
        self.by_id.pop(w.id, None)
        ss = [sid for sid in w.members if sid in self._sim_store.by_id]
        u = self._users.get(w.user) or user
        await asyncio.gather(*(self._sims.delete(u, sid) for sid in ss))
        self._hub.publish(
            w.user, None, {"type": "sweep", "sweep": {"id": w.id, "deleted": True}}
        )
        await self._store.delete(self._key(w))
        return {"deleted": w.id, "simulations": len(ss)}

    # --- views -----------------------------------------------------------------

    def member_status(self, w, index, sim):
        if sim is None or sim.deleted:
            return "deleted"
        if index in w.todo_set or sim.id in w.feeding:
            return "pending"
        if sim.job.status == job.MISSING:
            return "pending"
        return sim.job.status

    def summary(self, w):
        counts = collections.Counter()
        for i, sid in enumerate(w.members):
            counts[self.member_status(w, i, self._sim_store.by_id.get(sid))] += 1
        done = sum(n for k, n in counts.items() if k in job.ENDED or k == "deleted")
        busy = counts["pending"] + sum(counts[k] for k in job.ACTIVE)
        c = self._catalog.codes.get(w.code)
        n = len(w.members)
        return {
            "id": w.id,
            "user": w.user,
            "name": w.name,
            "code": w.code,
            "params": w.params,
            "axes": w.axes,
            "combine": w.combine,
            "cores": w.cores,
            "driver": w.driver,
            "max_parallel": w.max_parallel,
            "created": w.created,
            "updated": w.updated,
            "size": n,
            "members": n,
            "counts": dict(counts),
            "done": done,
            "progress": done / n if n else 1.0,
            "status": "running" if busy else ("canceled" if w.canceled else "done"),
            "result_fields": (c.to_dict().get("result") or []) if c else [],
        }

    def detail(self, user, sweep_id):
        """The sweep with its members: index, simulation, swept values, status, result."""
        w = self.get(user, sweep_id)
        names = [a["name"] for a in w.axes]
        ms = []
        for i, sid in enumerate(w.members):
            s = self._sim_store.by_id.get(sid)
            p = s.params if s is not None else {}
            ms.append(
                {
                    "index": i,
                    "simulation": sid,
                    "params": {k: p.get(k) for k in names},
                    "status": self.member_status(w, i, s),
                    "result": s.job.result if s else None,
                    "error": s.job.error if s else None,
                }
            )
        return dict(self.summary(w), members=ms)

    # --- pushes and the store --------------------------------------------------

    def _message(self, w):
        return {"type": "sweep", "sweep": self.summary(w)}

    def _push(self, w):
        """Push the summary soon (at most every `PUSH_SECS`)."""
        w.updated = max(time.time(), w.updated + 1e-6)
        if w.push_timer is not None or w.deleted:
            return
        w.push_timer = asyncio.get_running_loop().call_later(PUSH_SECS, self._pushed, w)

    def _pushed(self, w):
        w.push_timer = None
        if not w.deleted:
            self._hub.publish(w.user, None, self._message(w))

    def _key(self, w):
        return f"sweeps/{w.user}/{w.id}.json"

    def _save(self, w):
        return self._store.save(self._key(w), w.to_doc())

    async def destroy(self):
        for w in self.by_id.values():
            if w.push_timer is not None:
                w.push_timer.cancel()
        await self._tasks.destroy()


def _due(sweep, index, sim):
    """Is member `index` (`sim`) still to be handed over? Never run, or
    failed and asked for again by a retry it has not run since."""
    if sim.job.status == job.MISSING:
        return True
    return (
        sim.job.status in RETRIED
        and index in sweep.retry
        and (sim.job.queued_at or 0) < sweep.retry_at
    )
