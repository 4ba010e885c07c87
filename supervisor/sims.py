"""Simulations as users see them: create, list, edit, delete, and the push snapshot.

A simulation belongs to one user: a code from the catalog, its checked
parameters and its job. Someone else's simulation is "not found" (never
"forbidden"), except to admins. Storage is `sim_store.SimStore`; runs are
`runs.Runs`. Every change is pushed to the owner's (and admins') event
streams as a ``simulation`` message.
"""

import json
import time

from supervisor import catalog, errors, events, job

_MAX_NAME_CHARS = 200


class Sims:
    def __init__(self, store, catalog, runs, files, hub, users, library):
        """
        Args:
            store (sim_store.SimStore): the simulations
            users (users.Users): their plans (how many simulations they keep)
            library (library.Library): the files that `file` parameters name
        """
        self._library = library
        self._store = store
        self._users = users
        self._catalog = catalog
        self._runs = runs
        self._files = files
        self._hub = hub

    def get(self, user, sim_id):
        """The simulation if `user` may see it; NotFound otherwise (never 403)."""
        return self._store.get(user, sim_id)

    def list(self, user, owner=None, members=True):
        """`owner`'s simulations (only admins may name someone else); without
        the members of sweeps unless `members`."""
        if owner and owner != user.name and not user.is_admin():
            raise errors.Forbidden()
        return [
            s.to_dict()
            for s in self._store.for_user(owner or user.name)
            if members or s.sweep is None
        ]

    async def create(self, user, body):
        m = self._users.plan_of(user.name).max_simulations
        if len(self._store.for_user(user.name)) >= m:
            raise errors.Conflict(
                "too_many_simulations",
                f"your plan keeps at most {m} simulations: delete some first",
            )
        c = self._catalog.get(body.get("code"))
        n = check_name(body.get("name", c.title))
        p = c.check_params(body.get("params", {}))
        self.check_sources(user, c, p)
        s = self._store.create(user, c.name, n, p)
        try:
            await self._store.save(s)
        except OSError:
            # refused (a full disk: 507): not kept, nor written once there is
            # room, so that the client's retry makes no second one
            if not s.deleted:
                self._store.delete(s)
                self._publish_deleted(s)
            raise
        self.publish(s)
        return s.to_dict()

    def check_sources(self, user, code, params):
        """A `simulation` parameter names a simulation `user` may see, a
        `file` parameter a file of `user`'s library."""
        for p in code.params:
            v = params.get(p["name"])
            t = p["type"]
            if t not in ("simulation", "file") or v is None or _site(t, v):
                continue
            try:
                if t == "file":
                    self._library.get(user, v)
                else:
                    self._store.get(user, v)
            except errors.NotFound:
                what = "file in your library" if t == "file" else "simulation of yours"
                raise errors.BadInput(
                    "bad_param",
                    f"{p.get('label') or p['name']} ({p['name']}) names no {what}: {v}",
                ) from None

    async def update(self, user, sim, body):
        x = set(body) - {"name", "params"}
        if x:
            raise errors.BadInput("bad_field", f"cannot change {', '.join(sorted(x))}")
        if "params" in body and sim.job.status in job.ACTIVE:
            raise errors.Conflict("running", "parameters cannot change while it runs")
        n = check_name(body["name"]) if "name" in body else sim.name
        c = self._catalog.get(sim.code)
        p = (
            c.check_params(body["params"], base=sim.params)
            if "params" in body
            else sim.params
        )
        self.check_sources(user, c, p)
        sim.name = n
        sim.params = p
        sim.updated = time.time()
        await self._store.save(sim)
        self.publish(sim)
        return sim.to_dict()

    async def delete(self, user, sim_id):
        """Cancel its run (confirmed gone), then delete it and its files."""
        sim = self.get(user, sim_id)
        while True:
            # a run requested while we waited for the cancel is canceled too
            while sim.run is not None:
                await self._runs.cancel(sim)
            if sim.deleted:
                return {"deleted": sim_id}
            # its run directory on a host that is not this one (an agent's)
            await self._files.remove_remote(sim)
            if sim.run is None:
                break
        # its files too (`sim_store.SimStore.delete`)
        f = self._store.delete(sim)
        self._publish_deleted(sim)
        await f
        return {"deleted": sim_id}

    def _publish_deleted(self, sim):
        self._hub.publish(
            sim.user,
            sim.id,
            {"type": "simulation", "simulation": {"id": sim.id, "deleted": True}},
        )

    def publish(self, sim):
        self._hub.publish(
            sim.user, sim.id, {"type": "simulation", "simulation": sim.to_dict()}
        )

    def snapshot(self, user, sim_id=None):
        """What a new events subscriber sees first, as the bytes sent.

        Lazy: each simulation's message (cached by the hub until it changes)
        is taken as the subscriber's writer reaches it, so a large snapshot
        costs a page at a time; one deleted meanwhile is skipped (its
        deletion was queued behind the snapshot).
        """
        if sim_id:
            try:
                ss = [self.get(user, sim_id)]
            except errors.NotFound:
                ss = []
        elif user.is_admin():
            ss = list(self._store.by_id.values())
        else:
            ss = self._store.for_user(user.name)
        for s in ss:
            if not s.deleted:
                yield self._hub.simulation_message(s)
        yield events.SYNCED

    # --- the run, as a user asks for it ----------------------------------------

    async def run(self, user, sim, body):
        """Queue a run of `sim` for `user` (`runs.Runs.run`); returns the job."""
        for p in self._catalog.get(sim.code).params:
            v = sim.params.get(p["name"])
            if p["type"] == "file" and v is not None and _site("file", v):
                # the catalog may have dropped it since the value was checked
                if v[len(catalog.SITE_PREFIX) :] not in p.get("site", {}):
                    raise errors.Conflict(
                        "file_missing",
                        f"{p['name']}: {v!r} is not a file the site provides "
                        "(any more): choose another",
                    )
            elif p["type"] == "file" and v is not None:
                if not self._library.has(sim.user, v):
                    raise errors.Conflict(
                        "file_missing",
                        f"{p['name']}: {v!r} is not in the library (any more): "
                        "upload it, or choose another",
                    )
        j = await self._runs.run(user, sim, body.get("cores"), body.get("driver"))
        return j.to_dict()

    async def cancel(self, user, sim_id, error=None):
        """Cancel the current run, confirmed gone; returns the job."""
        s = self.get(user, sim_id)
        await self._runs.cancel(s, error=error)
        return s.job.to_dict()

    def job(self, user, sim_id):
        return self.get(user, sim_id).job.to_dict()

    async def frames(self, sim, since):
        """The `schema.Frames` reply as JSON bytes (the frames are kept encoded)."""
        lines, n, run_id = await self._store.frames_since(sim, since)
        return b"".join(
            (
                b'{"frames":[',
                b",".join(x[:-1] for x in lines),
                b'],"next":%d,"run_id":' % n,
                json.dumps(run_id).encode(),
                b"}",
            )
        )

    def log(self, sim, tail):
        """The log's tail: (text, where it ends in the whole log, run id)."""
        t = sim.log_tail
        if tail is not None:
            t = "".join(t.splitlines(keepends=True)[-tail:]) if tail else ""
        return t, sim.log_chars, sim.job.run_id or ""


def _site(type_, value):
    """Does a `file` parameter's `value` name a file the site provides?"""
    return type_ == "file" and value.startswith(catalog.SITE_PREFIX)


def check_name(v):
    """A simulation's (or a sweep's) name: printable, 1 to 200 characters."""
    if (
        not isinstance(v, str)
        or not v.strip()
        or len(v) > _MAX_NAME_CHARS
        or not v.isprintable()
    ):
        raise errors.BadInput(
            "bad_name",
            f"name must be printable text of 1 to {_MAX_NAME_CHARS} characters",
        )
    return v.strip()
