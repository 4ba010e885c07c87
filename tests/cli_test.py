"""Every argument of every ``supervisor sim`` and ``supervisor user`` command
says what it is in ``-h`` (argh shows only the default where help is missing).
"""

import pathlib
import re
import subprocess
import sys

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]

#: what argh prints in place of help that was never written: a default's repr
_BARE_DEFAULT = re.compile(r"^(-|'.*'|-?\d+(\.\d+)?|True|False|None)$")

#: the suffix argh's formatter appends to help
_DEFAULT_SUFFIX = re.compile(r"\s*\(default: [^)]*\)$")

#: seconds one ``-h`` may take
_HELP_SECS = 30


def _help(*args):
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args, "-h"],
        capture_output=True,
        text=True,
        timeout=_HELP_SECS,
        cwd=_ROOT,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def _commands(module):
    m = re.search(r"\{([a-z_,-]+)\}", _help(module))
    assert m, f"no command list in supervisor {module} -h"
    return m.group(1).split(",")


def _arguments(text):
    """``(invocation, help)`` of each entry under the argument headings."""
    res = []
    in_args = False
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            in_args = line in ("positional arguments:", "options:")
            continue
        if not in_args or not line.strip():
            continue
        if re.match(r"^  \S", line):
            a, _, h = line.strip().partition("  ")
            res.append([a, h.strip()])
        elif res:
            res[-1][1] = (res[-1][1] + " " + line.strip()).strip()
    return res


@pytest.mark.parametrize("module", ["sim", "user"])
def test_every_argument_has_help(module):
    missing = []
    for c in _commands(module):
        a = _arguments(_help(module, c))
        assert a, f"no arguments parsed of supervisor {module} {c} -h"
        for invocation, text in a:
            if invocation.startswith("-h, --help"):
                continue
            h = _DEFAULT_SUFFIX.sub("", text)
            if not h or _BARE_DEFAULT.match(h):
                missing.append(f"{c} {invocation}: {text!r}")
    assert not missing, f"supervisor {module}: arguments without help: {missing}"


def test_arguments_parsed():
    """The parser of this test sees what a missing help looks like."""
    a = _arguments(
        "usage: x\n\npositional arguments:\n  code                  -\n\n"
        "options:\n  -p PARAMS, --params PARAMS\n                        -\n"
        "  -c CORES, --cores CORES\n                        1\n"
        "  -n NAME, --name NAME  its name (default: -)\n"
    )
    assert a == [
        ["code", "-"],
        ["-p PARAMS, --params PARAMS", "-"],
        ["-c CORES, --cores CORES", "1"],
        ["-n NAME, --name NAME", "its name (default: -)"],
    ]
