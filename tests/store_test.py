"""Tests of supervisor/store.py: atomic, durable, ordered, coalesced writes.

The writer thread is held at a gate (a `threading.Event` queued with
`Store.call`) when a test needs saves to pile up before it runs; nothing waits
on time.
"""

import asyncio
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest
import small_disk

from supervisor import store

_ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Gates:
    """Holds the writer thread until `open`; all open at teardown."""

    def __init__(self):
        self._events = []

    def close(self, s):
        """Queue a gate on `s`'s writer: later writes wait behind it."""
        e = threading.Event()
        self._events.append(e)
        return e, s.call(e.wait, 60)

    def open_all(self):
        for e in self._events:
            e.set()


@pytest.fixture
def gates():
    g = _Gates()
    yield g
    g.open_all()


@pytest.fixture
def db(tmp_path, gates):
    s = store.Store(tmp_path)
    yield s
    gates.open_all()
    s.destroy()


def _doc(s, key):
    return json.loads(s.path(key).read_bytes())


async def test_save_load_round_trip(db):
    docs = {
        "jobs/alice/j1.json": {"status": "queued", "history": [], "n": 1},
        "jobs/alice/j2.json": {"status": "running", "progress": 0.5},
        "jobs/bob/j1.json": {"unicode": "h\u00e9at \u2603", "nested": {"a": [1, 2]}},
        "users/alice.json": {"role": "admin"},
    }
    await asyncio.gather(*(db.save(k, d) for k, d in docs.items()))
    assert sorted(db.load_all("jobs")) == sorted(
        (k, d) for k, d in docs.items() if k.startswith("jobs/")
    )
    assert db.load_all("users") == [("users/alice.json", {"role": "admin"})]
    assert db.load_all("agents") == []
    for k, d in docs.items():
        assert store.read(db.path(k)) == d
    # a new Store over the same directory (a restart) sees the same
    s2 = store.Store(db.root.parent)
    try:
        assert sorted(s2.load_all("jobs")) == sorted(db.load_all("jobs"))
    finally:
        s2.destroy()
    assert db.writes == len(docs)
    assert db.write_secs > 0


async def test_save_overwrites(db):
    await db.save("jobs/a.json", {"v": 1})
    await db.save("jobs/a.json", {"v": 2})
    assert _doc(db, "jobs/a.json") == {"v": 2}
    assert db.load_all("jobs") == [("jobs/a.json", {"v": 2})]


async def test_read_missing():
    assert store.read(pathlib.Path("/nonexistent/simvisor/x.json")) is None


async def test_coalescing(db, gates):
    gate, held = gates.close(db)
    futures = [db.save("jobs/a.json", {"v": i}) for i in range(20)]
    assert not any(f.done() for f in futures)
    assert not db.path("jobs/a.json").exists()
    gate.set()
    await held
    await asyncio.gather(*futures)
    assert db.writes == 1
    assert _doc(db, "jobs/a.json") == {"v": 19}


async def test_save_after_the_writer_took_the_key_is_written_again(db, gates):
    gate, held = gates.close(db)
    f1 = db.save("jobs/a.json", {"v": 1})
    gate2, held2 = gates.close(db)
    gate.set()
    await held
    await f1
    f2 = db.save("jobs/a.json", {"v": 2})
    gate2.set()
    await f2
    assert _doc(db, "jobs/a.json") == {"v": 2}
    assert db.writes == 2
    await held2


async def test_ordering_across_keys(db, gates):
    gate, held = gates.close(db)
    done = []
    keys = [f"jobs/k{i}.json" for i in range(10)]
    fs = []
    for k in keys:
        f = db.save(k, {"k": k})
        f.add_done_callback(lambda _, k=k: done.append(k))
        fs.append(f)
    gate.set()
    await held
    await asyncio.gather(*fs)
    assert done == keys
    assert db.writes == len(keys)


async def test_durability_future_resolves_after_the_file_is_there(db, gates):
    k = "jobs/alice/j.json"
    await db.save(k, {"v": "old"})
    gate, held = gates.close(db)
    seen = []
    f = db.save(k, {"v": "new"})
    # what the disk holds at the moment the future resolves
    f.add_done_callback(lambda _: seen.append(_doc(db, k)))
    assert _doc(db, k) == {"v": "old"}
    assert not f.done()
    gate.set()
    await held
    await f
    assert seen == [{"v": "new"}]
    assert not db.path(k).with_name("j.json.tmp").exists()


async def test_delete(db, gates):
    await db.save("jobs/a.json", {"v": 1})
    await db.save("jobs/b.json", {"v": 1})
    await db.delete("jobs/a.json")
    assert not db.path("jobs/a.json").exists()
    assert db.load_all("jobs") == [("jobs/b.json", {"v": 1})]
    # deleting what is not there is fine
    await db.delete("jobs/a.json")
    await db.delete("nowhere/x.json")


async def test_delete_and_save_coalesce_newest_wins(db, gates):
    await db.save("jobs/a.json", {"v": 1})
    gate, held = gates.close(db)
    f1 = db.delete("jobs/a.json")
    f2 = db.save("jobs/a.json", {"v": 2})
    f3 = db.save("jobs/b.json", {"v": 1})
    f4 = db.delete("jobs/b.json")
    gate.set()
    await held
    await asyncio.gather(f1, f2, f3, f4)
    assert _doc(db, "jobs/a.json") == {"v": 2}
    assert not db.path("jobs/b.json").exists()


async def test_call_runs_in_order_with_writes(db, gates):
    k = "jobs/a.json"
    gate, held = gates.close(db)
    before = db.call(store.read, db.path(k))
    f1 = db.save(k, {"v": 1})
    middle = db.call(store.read, db.path(k))
    f2 = db.save("jobs/b.json", {"v": 1})
    after = db.call(store.read, db.path("jobs/b.json"))
    gate.set()
    await held
    assert await before is None
    assert await middle == {"v": 1}
    assert await after == {"v": 1}
    await asyncio.gather(f1, f2)


async def test_call_is_not_overtaken_by_a_later_save(db, gates):
    # Sims.end_run queues fsync of the run's log and frames with `call`, then
    # the job document that ends the run is saved: it must land after them
    k = "jobs/a.json"
    gate, held = gates.close(db)
    f1 = db.save(k, {"status": "running"})
    seen = db.call(store.read, db.path(k))
    f2 = db.save(k, {"status": "completed"})
    gate.set()
    await held
    await asyncio.gather(f1, f2)
    assert await seen == {"status": "running"}


async def test_call_returns_and_raises(db):
    assert await db.call(lambda a, b: a + b, 2, 3) == 5

    def boom():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await db.call(boom)


async def test_flush_waits_for_queued_writes(db, gates):
    gate, held = gates.close(db)
    fs = [db.save(f"jobs/k{i}.json", {"i": i}) for i in range(5)]
    gate.set()
    await db.flush()
    assert all(f.done() for f in fs)
    assert len(db.load_all("jobs")) == 5
    await held


async def test_failed_write_rejects_every_caller(db, gates):
    # a directory where the document should be
    db.path("jobs/a.json").mkdir(parents=True)
    gate, held = gates.close(db)
    fs = [db.save("jobs/a.json", {"v": i}) for i in range(3)]
    gate.set()
    await held
    for f in fs:
        with pytest.raises(OSError):
            await f
    # the store still works
    await db.save("jobs/b.json", {"v": 1})
    assert _doc(db, "jobs/b.json") == {"v": 1}


async def test_key_may_not_escape_the_store(db):
    with pytest.raises(AssertionError, match="escapes"):
        db.path("../outside.json")
    with pytest.raises(AssertionError, match="escapes"):
        await db.save("jobs/../../outside.json", {"v": 1})
    assert not (db.root.parent / "outside.json").exists()


def test_write_atomic_replaces_the_document(tmp_path):
    p = tmp_path / "d" / "e" / "doc.json"
    store.write_atomic(p, b'{"v": 1}')
    assert p.read_bytes() == b'{"v": 1}'
    store.write_atomic(p, b'{"v": 2}')
    assert p.read_bytes() == b'{"v": 2}'
    assert os.stat(p).st_mode & 0o777 == 0o600
    assert sorted(x.name for x in p.parent.iterdir()) == ["doc.json"]


def test_crash_between_write_and_rename_leaves_the_old_document(tmp_path):
    data_dir = tmp_path / "data"
    s = store.Store(data_dir)
    try:
        p = s.path("jobs/alice/j1.json")
        old = {"status": "running", "run_id": "r-000001"}
        store.write_atomic(p, json.dumps(old).encode())
        new = json.dumps({"status": "completed", "run_id": "r-000001"})
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, pathlib, signal, sys\n"
                "from supervisor import store\n"
                "store.write_atomic(\n"
                "    pathlib.Path(sys.argv[1]),\n"
                "    sys.argv[2].encode(),\n"
                "    before_rename=lambda: os.kill(os.getpid(), signal.SIGKILL),\n"
                ")\n"
                "print('not killed')\n",
                str(p),
                new,
            ],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert "not killed" not in r.stdout
        assert json.loads(p.read_bytes()) == old
        t = p.with_name(p.name + ".tmp")
        assert t.read_text() == new, "the new content was written, not renamed"
        # a restart: the document is the old one and the stale temp goes
        assert s.load_all("jobs") == [("jobs/alice/j1.json", old)]
        assert not t.exists()
        assert sorted(x.name for x in p.parent.iterdir()) == ["j1.json"]
    finally:
        s.destroy()


def test_load_all_skips_unreadable_documents(tmp_path):
    s = store.Store(tmp_path)
    try:
        d = s.root / "jobs"
        d.mkdir()
        (d / "torn.json").write_text('{"status": "runn')
        (d / "good.json").write_text('{"status": "queued"}')
        (d / "notes.txt").write_text("not a document")
        (d / "sub").mkdir()
        (d / "sub" / "deep.json").write_text("{}")
        assert s.load_all("jobs") == [
            ("jobs/good.json", {"status": "queued"}),
            ("jobs/sub/deep.json", {}),
        ]
    finally:
        s.destroy()


# --- a real full disk (tests/small_disk.py) ---------------------------------


@pytest.fixture
def small_fs(tmp_path):

    with small_disk.mounted(tmp_path / "fs") as p:
        yield p


async def _until(predicate, what, timeout_secs=30):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_secs
    while not predicate():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_write_to_a_full_disk_lands_once_space_returns(small_fs, capfd):

    s = store.Store(small_fs)
    try:
        await s.save("jobs/a.json", {"v": 0})
        assert s.health() is None
        small_disk.fill(small_fs)
        for v in (1, 2):
            with pytest.raises(OSError) as e:
                await s.save("jobs/a.json", {"v": v, "pad": "x" * 5000})
            assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            await s.save("jobs/b.json", {"v": 1})
        # told, and nothing partial: the old document, no temp file
        assert s.dirty() == 2 and s.failures >= 3
        assert "ENOSPC" in s.health() or "No space" in s.health()
        assert _doc(s, "jobs/a.json") == {"v": 0}
        assert sorted(x.name for x in (s.root / "jobs").iterdir()) == ["a.json"]
        # the failed appends were cut off: no torn record in the journal
        assert s.journal.size == s.journal.path.stat().st_size
        # the retries go on with the disk full; still one log line
        await asyncio.sleep(0.5)
        assert s.dirty() == 2
        small_disk.free(small_fs)
        await _until(lambda: s.dirty() == 0, "the dirty documents written")
        assert s.health() is None
        assert _doc(s, "jobs/a.json") == {"v": 2, "pad": "x" * 5000}
        assert _doc(s, "jobs/b.json") == {"v": 1}
        err = capfd.readouterr().err
        assert err.count("store write failed") == 1, err
        assert err.count("store writes recovered") == 1, err
    finally:
        s.destroy()


async def test_a_newer_save_replaces_a_dirty_document(small_fs):

    s = store.Store(small_fs)
    try:
        small_disk.fill(small_fs)
        with pytest.raises(OSError):
            await s.save("jobs/a.json", {"v": 1})
        with pytest.raises(OSError):
            await s.save("jobs/c.json", {})
        small_disk.free(small_fs)
        # a save that lands first makes the dirty content of its key moot
        await s.save("jobs/a.json", {"v": 2})
        await _until(lambda: s.dirty() == 0, "the dirty documents written")
        assert _doc(s, "jobs/a.json") == {"v": 2}
        assert _doc(s, "jobs/c.json") == {}
    finally:
        s.destroy()


def test_a_short_write_leaves_no_torn_document(small_fs):
    """A disk that fills mid-document: the old one stays, no temp file."""

    p = small_fs / "d" / "doc.json"
    store.write_atomic(p, b'{"v": 1}')
    # room for a third of it: the first write is short, the next fails
    v = os.statvfs(small_fs)
    (small_fs / "rest").write_bytes(b"\xff" * (v.f_bavail * v.f_frsize - 64 * 1024))
    with pytest.raises(OSError) as e:
        store.write_atomic(p, b"[" + b"1," * 100_000 + b"1]")
    assert e.value.errno == errno.ENOSPC
    assert p.read_bytes() == b'{"v": 1}'
    assert sorted(x.name for x in p.parent.iterdir()) == ["doc.json"]


# --- the journal --------------------------------------------------------------


def test_a_crash_before_the_checkpoint_is_replayed_from_the_journal(tmp_path):
    # saves acknowledged, then the process dies before any checkpoint; the
    # documents' own files were never synced: here they are lost (emptied,
    # as a power cut can leave them), and the journal brings them back
    code = (
        "import asyncio, os, signal\n"
        "from supervisor import store\n"
        "async def main():\n"
        f"    s = store.Store({str(tmp_path)!r})\n"
        "    await asyncio.gather(*(s.save(f'jobs/k{i}.json', {'i': i}) for i in range(20)))\n"
        "    await s.save('jobs/k3.json', {'i': 33})\n"
        "    await s.delete('jobs/k4.json')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "asyncio.run(main())\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=_ROOT)
    assert p.returncode == -signal.SIGKILL
    (j,) = (tmp_path / "db").glob(".journal.*")
    assert j.stat().st_size > 0
    for f in (tmp_path / "db" / "jobs").iterdir():
        f.write_bytes(b"")
    s = store.Store(tmp_path)
    try:
        d = dict(s.load_all("jobs"))
        assert d["jobs/k3.json"] == {"i": 33} and "jobs/k4.json" not in d
        assert len(d) == 19 and all(
            v == {"i": int(k[6:-5])} for k, v in d.items() if k != "jobs/k3.json"
        )
        (n,) = (tmp_path / "db").glob(".journal.*")
        assert not j.exists() and n.stat().st_size == 0
    finally:
        s.destroy()


def test_a_torn_last_record_ends_the_replay(tmp_path):
    from supervisor import journal

    db = tmp_path / "db"
    db.mkdir()
    good = journal.record("jobs/a.json", b'{"v": 1}') + journal.record(
        "jobs/b.json", b'{"v": 2}'
    )
    torn = journal.record("jobs/c.json", b'{"v": 3}')[:-2]
    (db / f"{journal.NAME}.7").write_bytes(good + torn)
    s = store.Store(tmp_path)
    try:
        assert dict(s.load_all("jobs")) == {
            "jobs/a.json": {"v": 1},
            "jobs/b.json": {"v": 2},
        }
    finally:
        s.destroy()


def _journals(s):
    return sorted((p.name, p.stat().st_size) for p in s.root.glob(".journal.*"))


async def test_a_checkpoint_syncs_and_removes_the_old_journal(db, monkeypatch):
    await db.save("jobs/a.json", {"v": 1})
    (j1,) = _journals(db)
    assert j1[1] > 0
    monkeypatch.setattr(db, "_checkpoint_at", 0)
    await db.save("jobs/b.json", {"v": 2})
    # the next file takes the appends; the old one goes once synced
    await asyncio.wrap_future(db._checkpointing)
    assert _journals(db) == [(".journal.2", 0)] and db.checkpoints == 1
    await db.save("jobs/a.json", {"v": 3})
    assert _journals(db)[0][1] > 0
    # a clean stop leaves nothing to replay
    await db.flush()
    assert _journals(db) == [(".journal.3", 0)]
    assert _doc(db, "jobs/a.json") == {"v": 3} and _doc(db, "jobs/b.json") == {"v": 2}


def test_journals_replay_in_order_and_a_new_one_follows(tmp_path):
    from supervisor import journal

    db = tmp_path / "db"
    db.mkdir()
    (db / f"{journal.NAME}.9").write_bytes(journal.record("jobs/a.json", b"[1]"))
    (db / f"{journal.NAME}.10").write_bytes(
        journal.record("jobs/a.json", b"[2]") + journal.record("jobs/b.json", None)
    )
    (db / "jobs").mkdir()
    (db / "jobs" / "b.json").write_bytes(b"[0]")
    s = store.Store(tmp_path)
    try:
        assert dict(s.load_all("jobs")) == {"jobs/a.json": [2]}
        assert _journals(s) == [(".journal.11", 0)]
    finally:
        s.destroy()


async def test_many_saves_at_once_are_one_append(db, gates, monkeypatch):
    appends = []
    a = db.journal.append
    monkeypatch.setattr(db.journal, "append", lambda d: (appends.append(d), a(d)))
    gate, held = gates.close(db)
    fs = [db.save(f"jobs/k{i}.json", {"i": i}) for i in range(50)]
    gate.set()
    await held
    await asyncio.gather(*fs)
    assert len(appends) == 1 and db.writes == 50


def test_a_replay_that_fails_keeps_the_journal_and_the_store_shut(tmp_path):
    from supervisor import journal

    db = tmp_path / "db"
    (db / "jobs" / "a.json").mkdir(parents=True)
    j = db / f"{journal.NAME}.3"
    j.write_bytes(journal.record("jobs/a.json", b"[1]"))
    # a directory where the document goes (as a full disk would, it fails)
    with pytest.raises(OSError, match="kept for the next start"):
        store.Store(tmp_path)
    assert j.exists()
    (db / "jobs" / "a.json").rmdir()
    s = store.Store(tmp_path)
    try:
        assert dict(s.load_all("jobs")) == {"jobs/a.json": [1]} and not j.exists()
    finally:
        s.destroy()


async def test_a_failed_checkpoint_goes_again_before_a_newer_one(db, monkeypatch):
    from supervisor import journal

    await db.save("jobs/a.json", {"v": 1})
    real = journal.Journal.checkpoint
    seen = []

    def failing(self, periods, path):
        seen.append([p.path.name for p in periods])
        raise OSError(5, "I/O error")

    monkeypatch.setattr(journal.Journal, "checkpoint", failing)
    monkeypatch.setattr(db, "_checkpoint_at", 0)
    await db.save("jobs/a.json", {"v": 2})
    await asyncio.wrap_future(db._checkpointing)
    # the old file stays, and so must every newer one until it is gone
    assert [n for n, _ in _journals(db)] == [".journal.1", ".journal.2"]
    monkeypatch.setattr(journal.Journal, "checkpoint", real)
    monkeypatch.setattr(db, "_checkpoint_at", 0)
    await db.save("jobs/a.json", {"v": 3})
    await asyncio.wrap_future(db._checkpointing)
    assert seen == [[".journal.1"]]
    assert [n for n, _ in _journals(db)] == [".journal.3"]
    assert _doc(db, "jobs/a.json") == {"v": 3}
