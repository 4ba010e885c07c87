"""What a run's code leaves in its directory never makes root reach outside it.

The code owns its run directory and may put a symlink, a FIFO or a device
where the agent or the supervisor (often root) reads or writes a file: the
download of an output, the agent's own run.log, a followed output file.
"""

import asyncio
import os

from agent import follow, owned


def _ran(server, user="admin"):
    s = server.create(user, "sleep", secs=0)
    server.run(user, s["id"])
    server.wait_status(user, s["id"], "completed")
    return s, server.data_dir / "run" / user / s["id"]


def test_a_download_never_follows_what_the_run_left(server):
    s, d = _ran(server)
    (d / "real.txt").write_text("mine\n")
    (d / "out.txt").symlink_to(server.data_dir / "admin-token")
    (d / "inside.txt").symlink_to(d / "real.txt")
    os.symlink("loopb", d / "loopa")
    os.symlink("loopa", d / "loopb")
    os.mkfifo(d / "fifo")
    base = f"/simulations/{s['id']}/files/"
    assert server.api("GET", base + "real.txt", expect=200).text == "mine\n"
    # a symlink, even to a file of the run; a loop; a FIFO: no such file,
    # and nothing blocks
    for n in ("out.txt", "inside.txt", "loopa", "loopa/x", "fifo"):
        r = server.api("GET", base + n)
        assert r.status_code == 404, (n, r.status_code, r.text)
        assert r.json()["error"] == "unknown_file"
    # the listing shows the regular files only
    f = server.api("GET", f"/simulations/{s['id']}/files", expect=200).json()
    assert "real.txt" in [x["path"] for x in f["files"]]
    assert not {"out.txt", "loopa", "fifo"} & {x["path"] for x in f["files"]}


def test_the_agents_own_file_is_never_written_through_a_symlink(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.log").symlink_to(secret)
    os.mkfifo(d / "other.log")
    for n in ("run.log", "other.log"):
        fd = owned.open_for_writing(d / n)
        os.write(fd, b"the run's log\n")
        os.close(fd)
        assert not (d / n).is_symlink() and (d / n).read_text() == "the run's log\n"
    assert secret.read_text() == "root's\n"


async def test_a_followed_file_is_never_read_through_a_symlink_or_a_device(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    d = tmp_path / "run"
    d.mkdir()
    (d / "log.lammps").symlink_to(secret)
    (d / "dump").symlink_to("/dev/zero")
    got = {"log.lammps": [], "dump": []}
    ino = follow.Inotify.open()
    fs = [follow.Follower(d / n, got[n].append, ino) for n in got]
    try:
        for f in fs:
            f.start()
        await asyncio.sleep(0.2)
        assert got == {"log.lammps": [], "dump": []}
        # replaced by a regular file: followed from its start
        (d / "log.lammps").unlink()
        (d / "log.lammps").write_text("Step Temp\n")
        await asyncio.wait_for(_until(lambda: got["log.lammps"]), 10)
        assert b"".join(got["log.lammps"]) == b"Step Temp\n"
        assert got["dump"] == []
    finally:
        for f in fs:
            f.close()
        ino.close()


async def _until(pred):
    while not pred():
        await asyncio.sleep(0.01)


def test_an_upload_name_of_255_bytes_is_stored(server):
    s = server.create("admin", "sleep", secs=0)
    # 62 four-byte characters and 7 more: 255 bytes, within the limits
    n = "\U0001f600" * 62 + "abcdefg"
    assert len(n.encode()) == 255
    server.api(
        "POST",
        f"/simulations/{s['id']}/files",
        params={"name": n},
        data=b"x",
        expect=201,
    )
    f = server.api("GET", f"/simulations/{s['id']}/files", expect=200).json()
    assert n in f["inputs"]
