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
