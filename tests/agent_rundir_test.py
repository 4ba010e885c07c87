"""agent.rundir.write_atomic: a file is replaced whole, or not at all."""

import os

import pytest

from agent import rundir

pytestmark = pytest.mark.timeout(10)


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "t.json"
    rundir.write_atomic(p, b"one")
    rundir.write_atomic(p, b"two")
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["t.json"]


def test_write_atomic_keeps_the_old_file_when_it_fails(tmp_path, monkeypatch):
    p = tmp_path / "t.json"
    rundir.write_atomic(p, b"old")

    def fail(*args):
        raise OSError("no space")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="no space"):
        rundir.write_atomic(p, b"new")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["t.json"]


def test_site_files_are_linked_or_the_run_says_which_is_missing(tmp_path):
    d = tmp_path / "run"
    rundir.prepare_dir(d, {}, {}, site_files={"release.dat": "/usr/lib/os-release"})
    assert os.readlink(d / "release.dat") == "/usr/lib/os-release"
    with pytest.raises(
        OSError, match=r"site file x\.eam is not at /nonexistent/x\.eam"
    ):
        rundir.prepare_dir(d, {}, {}, site_files={"x.eam": "/nonexistent/x.eam"})
