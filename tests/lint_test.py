"""The tree is black-formatted and passes ruff (ruff.toml: F, RUF, B)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
_PATHS = ["setup.py", "agent", "supervisor", "tests"]


def test_ruff():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *_PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_black():
    r = subprocess.run(
        [sys.executable, "-m", "black", "--check", "--quiet", *_PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
