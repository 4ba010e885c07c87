"""A followed file changed while no agent followed it (hostile review, issue 11).

The supervisor and the local agent are SIGKILLed while `spew` writes its
log a row at a time; the file is then truncated and rewritten, or rotated,
before the supervisor comes back and starts the agent again. The new agent
cannot make the frames of the old bytes again: it sees the change (the
CRC-32 of a journaled read), reads the file anew, and numbers what it makes
after the frames the supervisor holds. Before: the rows written after the
change were lost (the supervisor took them for frames it had).
"""

import pytest

from conftest import procs_under, wait_for
from restart_local_test import _kill_both, _restarted_agent, _start_run


@pytest.mark.parametrize("mode", ["truncate", "rotate"])
def test_rows_after_a_change_while_no_agent_followed_arrive(server_factory, mode):
    server = server_factory(lost_grace_secs=300, local_orphan_secs=60)
    sid, _, d = _start_run(server, "spew", mode=mode, lines=400, rate=100)
    wait_for(lambda: server.job("admin", sid)["frames"] >= 5, 30, what="frames")
    old = _kill_both(server)
    (d / "change-now").write_text("")
    # what it writes after the change, while nobody follows it
    wait_for(lambda: b"100010 " in (d / "log.spew").read_bytes(), 20, what="changed")
    server.start()
    _restarted_agent(server, old)
    j = server.wait_status("admin", sid, ("completed", "error", "canceled"), 60)
    assert j["status"] == "completed", j
    rows = [x for x in server.frames("admin", sid) if x["plot"] == "rows"]
    c = rows[0]["columns"]
    steps = [r[c.index("Step")] for x in rows for r in x["rows"]]
    new = [s for s in steps if s >= 100001]
    # every row after the change arrived, once, in order; none twice before it
    assert new == list(range(100001, 100001 + len(new))) and len(new) > 10, steps
    old_rows = [s for s in steps if s < 100001]
    assert old_rows == sorted(set(old_rows)) and old_rows[0] == 1
    # the result is of the file as it is now, read once from its start
    assert (j["result"]["rows"], j["result"]["step_last"]) == (len(new), new[-1])
    assert (
        "changed while no agent followed it"
        in server.api("GET", f"/simulations/{sid}/log").text
    )
    assert not procs_under(d)
