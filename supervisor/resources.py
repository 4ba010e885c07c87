"""Core budgets, per-user limits and fair queueing.

Pure: no I/O, no awaits. A run registers a `Request` when it is queued and
asks `Resources.check` where it may start: a `Target`, or an `Awaited`
carrying a future that the next relevant change resolves. Once every other
prerequisite passed, `Resources.commit` takes the cores and the user's slot
and returns a `Grant`. Waiting requests stay registered until they commit
or are destroyed, so a woken waiter keeps its turn until it restarts, and a
destroyed one is dropped at once: a freed core goes to the next live waiter.

Fairness: FIFO within a user; across users, round-robin (the user served least
recently goes first). A waiting head reserves the cores it needs ahead of
lower-priority users, so a big request is never starved by small ones.
Analysis requests use their own lane: no core budget, a per-user cap, never
behind runs.
"""

import asyncio
import collections
import itertools

from supervisor.dispatch import Awaited

RUN = "run"
ANALYSIS = "analysis"


class Plan:
    """What a user may use."""

    def __init__(
        self,
        name,
        max_running,
        max_run_secs,
        max_cores,
        max_analyses,
        mem_bytes=None,
        max_simulations=None,
        max_event_sockets=None,
        max_stored_bytes=None,
        max_run_memory_bytes=0,
        max_run_pids=0,
        max_library_bytes=0,
        max_library_file_bytes=0,
    ):
        self.name = name
        self.max_running = max_running
        self.max_run_secs = max_run_secs
        self.max_cores = max_cores
        self.max_analyses = max_analyses
        #: memory of the user's container (docker driver)
        self.mem_bytes = mem_bytes
        #: simulations a user may keep, and event streams open at once
        self.max_simulations = max_simulations
        self.max_event_sockets = max_event_sockets
        #: inputs, frames, logs and run directories a user may keep (`usage`)
        self.max_stored_bytes = max_stored_bytes
        #: one local run's memory and processes (its cgroup); 0: no limit
        self.max_run_memory_bytes = max_run_memory_bytes
        self.max_run_pids = max_run_pids
        #: the file library: all of a user's files, and one (`library`)
        self.max_library_bytes = max_library_bytes
        self.max_library_file_bytes = max_library_file_bytes


class Target:
    """A place runs go (the local host, a Docker host, a Slurm account)."""

    def __init__(self, name, cores):
        self.name = name
        self.cores = cores
        self.used = 0
        self.draining = False

    def free(self):
        return self.cores - self.used

    def to_dict(self):
        return {
            "name": self.name,
            "cores": self.cores,
            "cores_used": self.used,
            "cores_free": max(0, self.free()),
            "draining": self.draining,
        }


class Request:
    """A run waiting to start."""

    def __init__(self, key, user, plan, cores, targets, lane=RUN):
        self.key = key
        self.user = user
        self.plan = plan
        self.cores = cores
        self.targets = tuple(targets)
        self.lane = lane
        self.seq = None
        self.waiter = None
        self.registered = False

    def pkdebug_str(self):
        return f"Request(key={self.key} user={self.user} cores={self.cores})"


class Grant:
    """Cores and a user slot held by one run; `destroy` gives them back."""

    def __init__(self, resources, user, target, cores, lane):
        self._resources = resources
        self.user = user
        self.target = target
        self.cores = cores
        self.lane = lane
        self.destroyed = False

    def destroy(self):
        if self.destroyed:
            return
        self.destroyed = True
        self._resources._release(self)


class Resources:
    def __init__(self, targets, on_change=None):
        """
        Args:
            targets (list): of `Target`
            on_change (callable): called after any change (queue positions moved)
        """
        self.targets = {t.name: t for t in targets}
        assert len(self.targets) == len(targets), "duplicate target names"
        self._on_change = on_change
        self._seq = itertools.count()
        # user -> deque of waiting run-lane requests, FIFO
        self._queues = {}
        # users in round-robin order: first is served next
        self._rr = collections.OrderedDict()
        self._running = collections.Counter()
        self._analyses = collections.Counter()
        self._analysis_waiters = []

    def watch(self, on_change):
        """Call `on_change` after any change (queue positions moved)."""
        self._on_change = on_change

    # --- registration ------------------------------------------------------

    def add(self, request):
        """Queue a request (at the end of its user's queue)."""
        assert not request.registered
        request.registered = True
        request.seq = next(self._seq)
        if request.lane == ANALYSIS:
            self._analysis_waiters.append(request)
            return
        self._queues.setdefault(request.user, collections.deque()).append(request)
        self._rr.setdefault(request.user, None)
        self._changed()

    def remove(self, request):
        """Drop a request (committed or destroyed); idempotent."""
        if not request.registered:
            return
        request.registered = False
        if request.waiter and not request.waiter.done():
            request.waiter.cancel()
        request.waiter = None
        if request.lane == ANALYSIS:
            self._analysis_waiters.remove(request)
            self._wake_analyses(request.user)
            return
        q = self._queues[request.user]
        q.remove(request)
        if not q:
            del self._queues[request.user]
        self._changed()

    # --- the check ---------------------------------------------------------

    def check(self, request):
        """Where `request` may start now, or raise `Awaited`.

        Takes nothing: `commit` does, once every other prerequisite passed.
        Returns:
            Target: where it fits (for an analysis, its first target)
        Raises:
            Awaited: with a future resolved on the next relevant change
        """
        assert request.registered, "request not registered or already granted"
        if request.lane == ANALYSIS:
            if self._analyses[request.user] >= request.plan.max_analyses:
                raise self._wait(
                    request,
                    "waiting for one of your analyses to end",
                    "analysis_limit",
                    max_analyses=request.plan.max_analyses,
                )
            return self.targets.get(request.targets[0]) if request.targets else None
        q = self._queues[request.user]
        if q[0] is not request:
            n = q.index(request) + 1
            raise self._wait(
                request, f"queue position {n} of your runs", "queue", position=n
            )
        if self._running[request.user] >= request.plan.max_running:
            raise self._wait(
                request,
                f"waiting for one of your {request.plan.max_running} running jobs to end",
                "user_limit",
                max_running=request.plan.max_running,
            )
        t = self._fit(request)
        if t is None:
            return self._no_fit(request)
        return t

    def commit(self, request, target):
        """Take what `check` found free; the request leaves the queue."""
        assert request.registered
        request.registered = False
        request.waiter = None
        if request.lane == ANALYSIS:
            self._analysis_waiters.remove(request)
            self._analyses[request.user] += 1
            return Grant(self, request.user, target, 0, ANALYSIS)
        q = self._queues[request.user]
        assert q[0] is request
        q.popleft()
        if not q:
            del self._queues[request.user]
        target.used += request.cores
        self._running[request.user] += 1
        # served: to the back of the round-robin
        self._rr.pop(request.user, None)
        if request.user in self._queues:
            self._rr[request.user] = None
        self._changed()
        return Grant(self, request.user, target, request.cores, RUN)

    def _no_fit(self, request):
        usable = [self.targets[n] for n in request.targets if n in self.targets]
        if not usable:
            raise self._wait(request, "no host configured for this driver", "no_host")
        if all(t.draining for t in usable):
            raise self._wait(request, "waiting: every host is draining", "draining")
        if all(t.cores < request.cores for t in usable):
            raise self._wait(
                request,
                f"no host has {request.cores} cores",
                "too_large",
                cores=request.cores,
            )
        raise self._wait(
            request, f"waiting for {request.cores} cores", "cores", cores=request.cores
        )

    def adopt(self, user, target_name, cores):
        """Account for a run that is already running (after a restart).

        It may exceed the budget: the process exists whatever we think.
        """
        t = self.targets.get(target_name)
        if t:
            t.used += cores
        self._running[user] += 1
        return Grant(self, user, t, cores, RUN)

    def _eligible_heads(self):
        """Heads that pass the per-user checks, in round-robin order."""
        for u in self._rr:
            q = self._queues.get(u)
            if q and self._running[u] < q[0].plan.max_running:
                yield q[0]

    def _fit(self, request):
        """The target `request` may use now, honouring higher-priority heads."""
        free = {n: t.free() for n, t in self.targets.items() if not t.draining}
        for h in self._eligible_heads():
            c = [n for n in h.targets if n in free]
            if h is request:
                for n in c:
                    if free[n] >= request.cores:
                        return self.targets[n]
                return None
            # a head that can never fit anywhere must not block everyone else
            c = [n for n in c if self.targets[n].cores >= h.cores]
            if c:
                # reserve where it fits best, so it is not starved
                n = max(c, key=lambda n: free[n])
                free[n] -= h.cores
        return None

    # --- waiting and waking ------------------------------------------------

    def _wait(self, request, situation, reason, **detail):
        if request.waiter is None or request.waiter.done():
            request.waiter = asyncio.get_running_loop().create_future()
        return Awaited(request.waiter, situation, reason, **detail)

    def _wake(self, request):
        w = request.waiter
        if w and not w.done():
            w.set_result(None)

    def _changed(self):
        """Wake every head that may now pass; heads changed, so tell them too."""
        for q in self._queues.values():
            # a head restarts cheaply: it re-checks and re-registers, and its
            # situation text follows the change
            self._wake(q[0])
        if self._on_change:
            self._on_change()

    def _wake_analyses(self, user):
        for r in self._analysis_waiters:
            # the first one still asleep: one already woken holds its turn
            if r.user == user and r.waiter is not None and not r.waiter.done():
                self._wake(r)
                return

    def _release(self, grant):
        if grant.lane == ANALYSIS:
            self._analyses[grant.user] -= 1
            self._wake_analyses(grant.user)
            return
        if grant.target is not None:
            grant.target.used -= grant.cores
        self._running[grant.user] -= 1
        self._changed()

    # --- views -------------------------------------------------------------

    def positions(self):
        """Service order of every waiting run-lane request.

        Returns:
            dict: request -> 1-based position if all waits ended now, by
            round-robin over users (in `_rr` order) and FIFO within a user
        """
        res = {}
        qs = [list(self._queues[u]) for u in self._rr if u in self._queues]
        p = 1
        for i in range(max((len(q) for q in qs), default=0)):
            for q in qs:
                if i < len(q):
                    res[q[i]] = p
                    p += 1
        return res

    def queue_lengths(self):
        return {u: len(q) for u, q in self._queues.items()}

    def running(self, user):
        return self._running[user]

    def drain(self, name, draining=True):
        self.targets[name].draining = draining
        self._changed()
