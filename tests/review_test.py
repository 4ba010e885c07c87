"""Defects found by a hostile review of issue 10's merge (push, quota, store)."""

import asyncio
import json
import threading

from inproc import World
from supervisor import errors, events


async def test_a_deletion_while_an_upload_is_written_leaves_nothing(tmp_path):
    """An upload's write queued before a deletion: neither its file nor its
    bytes outlive the simulation."""
    w = await World(tmp_path).start()
    try:
        sid = await w.sim()
        await w.sv.files.put_input(w.user, sid, "old.txt", b"o" * 10)
        # the writer thread is busy: the upload's write waits behind it
        hold = threading.Event()
        busy = w.sv.store.call(hold.wait)
        up = asyncio.ensure_future(
            w.sv.files.put_input(w.user, sid, "a.txt", b"x" * 1000)
        )
        await asyncio.sleep(0.1)
        assert not up.done()
        d = asyncio.ensure_future(w.sv.sims.delete(w.user, sid))
        await asyncio.sleep(0.1)
        hold.set()
        await busy
        await d
        await asyncio.gather(up, return_exceptions=True)
        # all that was queued has run
        await w.sv.store.call(lambda: None)
        i = tmp_path / "inputs" / "alice" / sid
        assert not i.exists() or not list(i.iterdir()), list(i.iterdir())
        assert w.sv.sim_store.usage.bytes_of("alice") == 0
    finally:
        await w.stop()


async def test_a_demoted_admin_stream_sees_no_more_of_others(tmp_path):
    """An admin's open event stream is subscribed to everyone's: once the
    role is taken away, it is closed (a new one sees only their own)."""
    w = await World(tmp_path).start()
    try:
        u, _, f = w.sv.users.add("carol", role="admin")
        await f
        got = []
        closed = []
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)

        def write(data):
            got.extend(json.loads(p) for p in events.unframe(data))
            return done

        s = events.Subscriber(
            u, None, write, lambda: closed.append(1), lambda: [events.SYNCED], 1 << 20
        )
        w.sv.hub.subscribe(s)
        s.start()
        await w.sim()
        # written at the end of the loop's turn (`events.Subscriber.uncork`)
        await asyncio.sleep(0)
        assert [m["type"] for m in got] == ["synced", "simulation"]
        await w.sv.admin.update_user(u, {"role": "user"})
        got.clear()
        # alice's new simulation, and a change of it
        await w.sim()
        await asyncio.sleep(0)
        assert got == [] and closed == [1] and w.sv.hub.open_of("carol") == 0
    finally:
        await w.stop()


async def test_frames_held_past_the_bound_leave_a_prefix_not_a_gap(
    tmp_path, monkeypatch
):
    """A full disk for longer than the held bytes allow: what is written is
    the run's first frames, never later ones after a hole (a reload numbers
    frames by their line, so a hole would shift every later seq)."""
    import small_disk
    from supervisor import config, sim_store, store, users

    monkeypatch.setattr(sim_store, "_MAX_BEHIND_BYTES", 2000)
    with small_disk.mounted(tmp_path / "data") as d:
        cfg = config.load(data_dir=str(d))
        st = store.Store(d)
        ss = sim_store.SimStore(cfg, st)
        try:
            sim = ss.create(users.User({"name": "alice"}), "heat", "h", {})
            ss.new_run(sim)
            sim.job.queue("r-000001", 1, "local", "run", 0.0)
            ss.add_frame(sim, 0, {"i": 0})
            small_disk.fill(d)
            for i in range(1, 40):
                ss.add_frame(sim, i, {"i": i, "pad": "x" * 1000})
            small_disk.free(d)
            ss.add_frame(sim, 40, {"i": 40})
            ss.end_run(sim)
            await ss.save(sim)
            again = sim_store.SimStore(cfg, st).load()
            # an active run's frames are held as the JSON lines written
            got = [json.loads(f)["i"] for f in again[0].frames]
            assert got == list(range(len(got))), got
            assert st.dirty() == 0 and st.health() is None
        finally:
            ss.destroy()
            st.destroy()


async def _ws(server, user, query):
    import tornado.httpclient
    import tornado.websocket

    return await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(
            server.url.replace("http", "ws") + "/api/events" + query,
            headers={"Authorization": "Bearer " + server.tokens[user]},
        )
    )


async def _next(c):
    m = await asyncio.wait_for(c.read_message(), 10)
    return None if m is None else json.loads(m)


async def _close(c):
    """Close `c` and wait until its socket is (not left to the collector)."""
    ended = c.close_code is not None
    c.close()
    # closed by the server, it was read to its end already
    while not ended and await _next(c) is not None:
        pass


async def test_an_empty_simulation_query_is_the_whole_stream(server):
    """``?simulation=`` (empty): the snapshot of all, so the changes of all
    too (it had the whole snapshot and then no change at all)."""
    c = await _ws(server, "admin", "?simulation=")
    try:
        assert (await _next(c))["type"] == "synced"
        sid = await asyncio.to_thread(server.create, "admin", "sleep", secs=0)
        m = await _next(c)
        assert m["type"] == "simulation" and m["simulation"]["id"] == sid["id"], m
    finally:
        await _close(c)


async def test_a_create_refused_by_a_full_disk_keeps_nothing(tmp_path):
    """A 507 on create: no simulation is kept (not in the list, not written
    once the disk has room), so a client's retry does not make two."""
    import small_disk

    with small_disk.mounted(tmp_path / "db", "1m") as db:
        w = await World(tmp_path).start()
        try:
            await w.sim()
            before = w.sv.sims.list(w.user)
            small_disk.fill(db)
            try:
                await w.sv.sims.create(w.user, {"code": "sleep", "params": {}})
            except OSError as e:
                assert errors.from_os_error(e).status == 507
            else:
                raise AssertionError("a full disk took the simulation")
            assert w.sv.sims.list(w.user) == before
            small_disk.free(db)
            await w.sv.store.flush()
            assert w.sv.store.dirty() == 0
            ids = sorted(p.name for p in (db / "jobs" / "alice").iterdir())
            assert ids == [f"{s['id']}.json" for s in before]
        finally:
            await w.stop()


async def test_an_events_client_cannot_park_big_messages_on_the_server(server):
    """Clients of ``/api/events`` only listen: a message of theirs is held
    only up to a few KiB (not the agents' 16 MiB), then the socket closes."""
    c = await _ws(server, "admin", "")
    try:
        assert (await _next(c))["type"] == "synced"
        # small ones (a client's keep-alive) are fine
        await c.write_message("ping")
        await c.write_message("x" * 100_000)
        assert await _next(c) is None
        assert c.close_code == 1009
    finally:
        await _close(c)
