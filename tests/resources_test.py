"""Tests of supervisor/resources.py: budgets, limits, fairness, waking.

`Resources` is pure but hands out asyncio futures, so the tests run in a loop;
none of them awaits anything that is not already resolved.
"""

import pytest

from supervisor import resources
from supervisor.dispatch import Awaited

#: roomy: only what a test sets limits it
_BIG = resources.Plan(
    "big", max_running=100, max_run_secs=60, max_cores=64, max_analyses=2
)
_BASIC = resources.Plan(
    "basic", max_running=1, max_run_secs=60, max_cores=2, max_analyses=1
)
_PREMIUM = resources.Plan(
    "premium", max_running=3, max_run_secs=60, max_cores=8, max_analyses=2
)


class _World:
    """Resources plus the requests a test made, by key."""

    def __init__(self, *targets):
        self.targets = {n: resources.Target(n, c) for n, c in targets}
        self.changes = 0
        self.res = resources.Resources(list(self.targets.values()), self._on_change)
        self.requests = {}

    def _on_change(self):
        self.changes += 1

    def add(self, key, user, cores=1, plan=_BIG, targets=None, lane=resources.RUN):
        r = resources.Request(
            key,
            user,
            plan,
            cores,
            list(self.targets) if targets is None else targets,
            lane=lane,
        )
        self.res.add(r)
        self.requests[key] = r
        return r

    def check(self, key):
        """The target, or the `Awaited` raised."""
        try:
            return self.res.check(self.requests[key])
        except Awaited as a:
            return a

    def wait(self, key):
        """Check, expecting to wait."""
        a = self.check(key)
        assert isinstance(a, Awaited), f"key={key} fits on {a.name}"
        assert a.waitable is self.requests[key].waiter
        assert not a.waitable.done()
        return a

    def start(self, key):
        """Check, expecting to fit, and commit."""
        t = self.check(key)
        assert isinstance(t, resources.Target), f"key={key} waits: {t.situation}"
        return self.res.commit(self.requests[key], t)

    def waiting(self):
        return [k for k, r in self.requests.items() if r.registered]


async def test_fifo_within_a_user():
    w = _World(("h", 1))
    for i in range(1, 5):
        w.add(f"a{i}", "a")
    for i in range(2, 5):
        assert w.wait(f"a{i}").situation == f"queue position {i} of your runs"
    for i in range(1, 5):
        g = w.start(f"a{i}")
        for j in range(i + 1, 5):
            w.wait(f"a{j}")
        g.destroy()
    assert w.res.queue_lengths() == {}
    assert w.targets["h"].used == 0


async def test_round_robin_across_users():
    w = _World(("h", 1))
    for u, n in (("A", 5), ("B", 5), ("C", 1)):
        for i in range(1, n + 1):
            w.add(f"{u}{i}", u)
    order = []
    g = None
    while w.waiting():
        if g is not None:
            g.destroy()
        # every request checks, the next in line last: a woken waiter keeps
        # its turn until it restarts, whoever checks first
        fits = []
        for k in reversed(w.waiting()):
            a = w.check(k)
            if isinstance(a, resources.Target):
                fits.append((k, a))
        assert len(fits) == 1, f"fits={fits}"
        k, t = fits[0]
        g = w.res.commit(w.requests[k], t)
        order.append(k)
    g.destroy()
    assert order == ["A1", "B1", "C1", "A2", "B2", "A3", "B3", "A4", "B4", "A5", "B5"]
    assert w.targets["h"].used == 0


async def test_release_wakes_the_next_head():
    w = _World(("h", 1))
    w.add("a1", "a")
    g = w.start("a1")
    w.add("b1", "b")
    w.add("c1", "c")
    b = w.wait("b1")
    c = w.wait("c1")
    g.destroy()
    assert b.waitable.done() and b.waitable.result() is None
    # c is woken too (its situation may have changed) but b is ahead
    assert c.waitable.done()
    c = w.wait("c1")
    gb = w.start("b1")
    # b's commit is a change too: c re-checks and still waits
    c = w.wait("c1")
    gb.destroy()
    assert c.waitable.done()
    w.start("c1").destroy()


async def test_per_plan_max_running():
    w = _World(("h", 100))
    for i in range(1, 4):
        w.add(f"basic{i}", "basic", plan=_BASIC)
    for i in range(1, 6):
        w.add(f"premium{i}", "premium", plan=_PREMIUM)
    basic = [w.start("basic1")]
    assert w.wait("basic2").situation == "waiting for one of your 1 running jobs to end"
    premium = [w.start(f"premium{i}") for i in range(1, 4)]
    a = w.wait("premium4")
    assert a.situation == "waiting for one of your 3 running jobs to end"
    assert w.res.running("basic") == 1
    assert w.res.running("premium") == 3
    premium.pop(0).destroy()
    assert a.waitable.done()
    premium.append(w.start("premium4"))
    w.wait("premium5")
    basic.pop().destroy()
    basic.append(w.start("basic2"))
    for g in basic + premium:
        g.destroy()
    w.start("premium5").destroy()
    w.start("basic3").destroy()
    assert w.res.running("basic") == w.res.running("premium") == 0


async def test_a_head_at_its_user_limit_reserves_nothing():
    w = _World(("h", 4))
    w.add("a1", "a", plan=_BASIC)
    w.add("a2", "a", cores=4, plan=_BASIC)
    w.add("b1", "b", cores=2)
    g = w.start("a1")
    w.wait("a2")
    # a2 is first in round-robin order but may not run: b goes
    w.start("b1").destroy()
    g.destroy()
    w.start("a2").destroy()


async def test_cores_budget():
    w = _World(("h", 4))
    w.add("a1", "a", cores=2)
    w.add("b1", "b", cores=2)
    w.add("c1", "c", cores=1)
    ga = w.start("a1")
    gb = w.start("b1")
    assert w.targets["h"].used == 4
    assert w.targets["h"].to_dict() == {
        "name": "h",
        "cores": 4,
        "cores_used": 4,
        "cores_free": 0,
        "draining": False,
    }
    c = w.wait("c1")
    assert c.situation == "waiting for 1 cores"
    ga.destroy()
    assert w.targets["h"].used == 2
    assert c.waitable.done()
    gc = w.start("c1")
    assert w.targets["h"].used == 3
    gb.destroy()
    gc.destroy()
    assert w.targets["h"].used == 0


async def test_big_head_reserves_cores_no_starvation():
    w = _World(("h", 4))
    w.add("x1", "x", cores=3)
    gx = w.start("x1")
    w.add("a1", "a", cores=4)
    w.add("a2", "a", cores=1)
    w.add("b1", "b", cores=1)
    w.add("c1", "c", cores=1)
    assert w.wait("a1").situation == "waiting for 4 cores"
    # one core is free, but a1 is ahead of b and c and reserves it
    for k in ("b1", "c1"):
        assert w.wait(k).situation == "waiting for 1 cores"
    # and a's own later run cannot jump its first
    assert w.wait("a2").situation == "queue position 2 of your runs"
    gx.destroy()
    ga = w.start("a1")
    assert w.targets["h"].used == 4
    for k in ("a2", "b1", "c1"):
        w.wait(k)
    ga.destroy()
    # a was just served: b, c, then a again
    gb = w.start("b1")
    gc = w.start("c1")
    ga2 = w.start("a2")
    for g in (gb, gc, ga2):
        g.destroy()
    assert w.targets["h"].used == 0


async def test_big_head_is_not_starved_by_a_stream_of_small_runs():
    w = _World(("h", 4))
    for i in range(1, 7):
        w.add(f"b{i}", "b")
    gs = [w.start(f"b{i}") for i in range(1, 4)]
    w.add("a1", "a", cores=4)
    # b is ahead of a in round-robin order: one more b fits
    gs.append(w.start("b4"))
    a = w.wait("a1")
    assert a.situation == "waiting for 4 cores"
    # from now on every freed core is kept for a1
    while gs:
        gs.pop(0).destroy()
        assert a.waitable.done()
        if gs:
            a = w.wait("a1")
            assert w.wait("b5").situation == "waiting for 1 cores"
    ga = w.start("a1")
    w.wait("b5")
    ga.destroy()
    w.start("b5").destroy()
    w.start("b6").destroy()
    assert w.targets["h"].used == 0


async def test_a_head_that_can_never_fit_reserves_nothing():
    w = _World(("h", 4))
    w.add("a1", "a", cores=8)
    w.add("b1", "b", cores=1)
    assert w.wait("a1").situation == "no host has 8 cores"
    t = w.check("b1")
    assert isinstance(t, resources.Target), t.situation


async def test_removed_waiter_is_canceled_and_the_next_one_is_woken():
    w = _World(("h", 1))
    w.add("x1", "x")
    gx = w.start("x1")
    w.add("a1", "a")
    w.add("b1", "b")
    a = w.wait("a1")
    b = w.wait("b1")
    w.res.remove(w.requests["a1"])
    assert a.waitable.cancelled()
    assert w.requests["a1"].waiter is None
    assert not w.requests["a1"].registered
    # the next one is told at once (it is now first in line) ...
    assert b.waitable.done() and not b.waitable.cancelled()
    b = w.wait("b1")
    # ... and the freed core goes to it, not to the dead waiter
    gx.destroy()
    assert b.waitable.done()
    gb = w.start("b1")
    # remove is idempotent, also after the request left the queue
    w.res.remove(w.requests["a1"])
    w.res.remove(w.requests["b1"])
    gb.destroy()
    assert w.res.queue_lengths() == {}
    assert w.targets["h"].used == 0


async def test_woken_head_removed_before_it_restarts():
    w = _World(("h", 1))
    w.add("x1", "x")
    gx = w.start("x1")
    w.add("a1", "a")
    w.add("b1", "b")
    a = w.wait("a1")
    w.wait("b1")
    gx.destroy()
    assert a.waitable.done()
    # a is destroyed before its task runs again: b must not wait for it
    w.res.remove(w.requests["a1"])
    w.start("b1").destroy()


async def test_removed_non_head_frees_its_place():
    w = _World(("h", 1))
    for i in range(1, 4):
        w.add(f"a{i}", "a")
    a3 = w.wait("a3")
    assert a3.situation == "queue position 3 of your runs"
    w.res.remove(w.requests["a2"])
    assert w.wait("a3").situation == "queue position 2 of your runs"
    w.res.remove(w.requests["a1"])
    assert a3.waitable.done(), "a3 is head now"
    w.start("a3").destroy()


async def test_no_lost_wake_up():
    w = _World(("h", 1))
    w.add("x1", "x")
    gx = w.start("x1")
    w.add("a1", "a")
    a = w.wait("a1")
    # the release happens after check and before the task awaits the future
    gx.destroy()
    assert a.waitable.done()


async def test_check_again_while_waiting_keeps_the_same_future():
    w = _World(("h", 1))
    w.add("x1", "x")
    gx = w.start("x1")
    w.add("a1", "a")
    a = w.wait("a1")
    assert w.wait("a1").waitable is a.waitable
    gx.destroy()
    w.start("a1").destroy()


async def test_positions():
    w = _World(("h", 1))
    for u, n in (("A", 3), ("B", 2), ("C", 1)):
        for i in range(1, n + 1):
            w.add(f"{u}{i}", u)
    p = {r.key: n for r, n in w.res.positions().items()}
    assert p == {"A1": 1, "B1": 2, "C1": 3, "A2": 4, "B2": 5, "A3": 6}
    assert w.res.queue_lengths() == {"A": 3, "B": 2, "C": 1}
    # positions are the service order: A1 is served, A goes to the back
    g = w.start("A1")
    p = {r.key: n for r, n in w.res.positions().items()}
    assert p == {"B1": 1, "C1": 2, "A2": 3, "B2": 4, "A3": 5}
    w.res.remove(w.requests["C1"])
    p = {r.key: n for r, n in w.res.positions().items()}
    assert p == {"B1": 1, "A2": 2, "B2": 3, "A3": 4}
    g.destroy()


async def test_positions_match_service_order():
    w = _World(("h", 1))
    for u, n in (("A", 3), ("B", 4), ("C", 1), ("D", 2)):
        for i in range(1, n + 1):
            w.add(f"{u}{i}", u)
    expect = sorted(w.res.positions().items(), key=lambda x: x[1])
    served = []
    while w.waiting():
        k = next(k for k in w.waiting() if isinstance(w.check(k), resources.Target))
        w.start(k).destroy()
        served.append(k)
    assert served == [r.key for r, _ in expect]
    assert w.res.positions() == {}


async def test_on_change():
    w = _World(("h", 1))
    n = w.changes
    w.add("a1", "a")
    assert w.changes == n + 1
    g = w.start("a1")
    assert w.changes == n + 2
    g.destroy()
    assert w.changes == n + 3
    w.res.drain("h")
    assert w.changes == n + 4


async def test_drain_stops_new_commits_there():
    w = _World(("h1", 4), ("h2", 4))
    w.add("a1", "a", cores=2)
    g1 = w.start("a1")
    assert g1.target.name == "h1"
    w.res.drain("h1")
    assert w.targets["h1"].to_dict()["draining"]
    w.add("a2", "a", cores=2)
    g2 = w.start("a2")
    assert g2.target.name == "h2", "h1 has room but is draining"
    w.add("b1", "b", cores=1, targets=["h1"])
    b = w.wait("b1")
    assert b.situation == "waiting: every host is draining"
    # what runs there still ends normally
    g1.destroy()
    assert w.targets["h1"].used == 0
    assert isinstance(w.check("b1"), Awaited)
    w.res.drain("h1", False)
    assert b.waitable.done()
    gb = w.start("b1")
    assert gb.target.name == "h1"
    for g in (g2, gb):
        g.destroy()


@pytest.mark.parametrize(
    "targets,cores,draining,situation",
    [
        (["nowhere"], 1, [], "no host configured for this driver"),
        ([], 1, [], "no host configured for this driver"),
        (["h1", "h2"], 1, ["h1", "h2"], "waiting: every host is draining"),
        (["h1"], 1, ["h1"], "waiting: every host is draining"),
        (["h1", "nowhere"], 1, ["h1"], "waiting: every host is draining"),
        (["h1", "h2"], 8, [], "no host has 8 cores"),
        (["h1", "h2"], 3, [], "waiting for 3 cores"),
        (["h2"], 3, ["h1"], "waiting for 3 cores"),
    ],
)
async def test_no_fit_situations(targets, cores, draining, situation):
    w = _World(("h1", 4), ("h2", 4))
    w.add("x1", "x", cores=2, targets=["h1"])
    w.add("x2", "x", cores=2, targets=["h2"])
    gs = [w.start("x1"), w.start("x2")]
    for n in draining:
        w.res.drain(n)
    w.add("a1", "a", cores=cores, targets=targets)
    assert w.wait("a1").situation == situation
    for g in gs:
        g.destroy()


async def test_fits_on_the_first_target_with_room():
    w = _World(("h1", 2), ("h2", 4))
    w.add("a1", "a", cores=3, targets=["h1", "h2"])
    assert w.start("a1").target.name == "h2"
    w.add("b1", "b", cores=2, targets=["h1", "h2"])
    assert w.start("b1").target.name == "h1"


async def test_analysis_never_waits_for_the_run_lane():
    w = _World(("h", 1))
    w.add("a1", "a", plan=_BASIC)
    w.add("a2", "a", plan=_BASIC)
    w.add("b1", "b", plan=_BASIC)
    g = w.start("a1")
    w.wait("a2")
    w.wait("b1")
    # every core is used, a is at its running limit, runs are queued
    w.add("an1", "a", plan=_BASIC, lane=resources.ANALYSIS)
    t = w.check("an1")
    assert t is w.targets["h"]
    ga = w.res.commit(w.requests["an1"], t)
    assert ga.lane == resources.ANALYSIS
    assert ga.cores == 0
    assert w.targets["h"].used == 1, "analyses take no cores"
    assert w.res.running("a") == 1, "nor a running slot"
    assert w.res.queue_lengths() == {"a": 1, "b": 1}
    assert all(r.key != "an1" for r in w.res.positions())
    ga.destroy()
    g.destroy()


async def test_analysis_per_user_cap():
    w = _World(("h", 1))
    for i in range(1, 4):
        w.add(f"a{i}", "a", lane=resources.ANALYSIS)
    w.add("b1", "b", lane=resources.ANALYSIS)
    ga = [w.start("a1"), w.start("a2")]
    a3 = w.wait("a3")
    assert a3.situation == "waiting for one of your analyses to end"
    # the cap is per user
    gb = w.start("b1")
    assert not a3.waitable.done()
    gb.destroy()
    assert not a3.waitable.done(), "another user's analysis ending is no news"
    ga.pop().destroy()
    assert a3.waitable.done()
    ga.append(w.start("a3"))
    for g in ga:
        g.destroy()


async def test_analysis_without_targets():
    w = _World(("h", 1))
    r = resources.Request("an", "a", _BIG, 1, [], lane=resources.ANALYSIS)
    w.res.add(r)
    assert w.res.check(r) is None
    g = w.res.commit(r, None)
    g.destroy()


async def test_removed_analysis_waiter_wakes_the_next():
    w = _World(("h", 1))
    plan = _BASIC
    for i in range(1, 4):
        w.add(f"a{i}", "a", plan=plan, lane=resources.ANALYSIS)
    g = w.start("a1")
    a2 = w.wait("a2")
    a3 = w.wait("a3")
    w.res.remove(w.requests["a2"])
    assert a2.waitable.cancelled()
    g.destroy()
    assert a3.waitable.done()
    w.start("a3").destroy()


async def test_analysis_no_lost_wake_up():
    w = _World(("h", 1))
    w.add("a1", "a", plan=_BASIC, lane=resources.ANALYSIS)
    w.add("a2", "a", plan=_BASIC, lane=resources.ANALYSIS)
    g = w.start("a1")
    a = w.wait("a2")
    g.destroy()
    assert a.waitable.done()
    w.start("a2").destroy()


async def test_every_freed_analysis_slot_wakes_a_waiter():
    w = _World(("h", 1))
    for i in range(1, 5):
        w.add(f"a{i}", "a", lane=resources.ANALYSIS)
    gs = [w.start("a1"), w.start("a2")]
    a3 = w.wait("a3")
    a4 = w.wait("a4")
    # both slots free up before either waiter's task runs again
    for g in gs:
        g.destroy()
    assert a3.waitable.done()
    assert a4.waitable.done(), "a4 waits although a slot is free"


async def test_adopt_accounts_cores_beyond_budget():
    w = _World(("h", 2))
    g = w.res.adopt("a", "h", 3)
    assert w.targets["h"].used == 3
    assert w.targets["h"].free() == -1
    assert w.targets["h"].to_dict()["cores_free"] == 0
    assert w.res.running("a") == 1
    w.add("b1", "b")
    b = w.wait("b1")
    assert b.situation == "waiting for 1 cores"
    g.destroy()
    assert w.targets["h"].used == 0
    assert w.res.running("a") == 0
    assert b.waitable.done()
    w.start("b1").destroy()


async def test_adopt_counts_against_the_user_limit():
    w = _World(("h", 4))
    g = w.res.adopt("a", "h", 1)
    w.add("a1", "a", plan=_BASIC)
    a = w.wait("a1")
    assert a.situation == "waiting for one of your 1 running jobs to end"
    g.destroy()
    assert a.waitable.done()
    w.start("a1").destroy()


async def test_adopt_on_an_unknown_target():
    w = _World(("h", 2))
    g = w.res.adopt("a", "gone", 3)
    assert g.target is None
    assert w.targets["h"].used == 0
    assert w.res.running("a") == 1
    g.destroy()
    g.destroy()
    assert w.res.running("a") == 0


@pytest.mark.parametrize("lane", [resources.RUN, resources.ANALYSIS])
async def test_grant_destroy_is_idempotent(lane):
    w = _World(("h", 4))
    w.add("a1", "a", cores=2, plan=_BASIC, lane=lane)
    w.add("a2", "a", cores=2, plan=_BASIC, lane=lane)
    g = w.start("a1")
    w.wait("a2")
    g.destroy()
    assert g.destroyed
    g2 = w.start("a2")
    # a second destroy of the first grant must not free a2's slot or cores
    g.destroy()
    w.add("a3", "a", cores=2, plan=_BASIC, lane=lane)
    w.wait("a3")
    assert w.res.running("a") == (1 if lane == resources.RUN else 0)
    assert w.targets["h"].used == (2 if lane == resources.RUN else 0)
    g2.destroy()
    w.start("a3").destroy()
    assert w.targets["h"].used == 0
    assert w.res.running("a") == 0


async def test_duplicate_target_names_are_refused():
    with pytest.raises(AssertionError, match="duplicate"):
        resources.Resources([resources.Target("h", 1), resources.Target("h", 2)])


async def test_check_after_commit_is_a_bug():
    w = _World(("h", 1))
    w.add("a1", "a")
    g = w.start("a1")
    with pytest.raises(AssertionError):
        w.res.check(w.requests["a1"])
    g.destroy()
