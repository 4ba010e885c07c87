"""Parsers of the output files of real codes, one per format, by name.

A code's declaration names the format of each output file it writes; the
agent follows the file and feeds what is appended to a parser from
`PARSERS` (see `agent.parsers.base.Parser` for the interface and the
records). Pure: no I/O, the standard library only.
"""

import types

from agent.parsers.base import Parser
from agent.parsers.gromacs_log import GromacsLog
from agent.parsers.lammps_dump import LammpsDump
from agent.parsers.lammps_log import LammpsLog


def _registry(*classes):
    rv = {}
    for c in classes:
        if not c.name or c.name in rv:
            raise AssertionError(
                f"parser {c.__name__} has an empty or duplicate name={c.name!r}"
            )
        rv[c.name] = c
    return types.MappingProxyType(rv)


#: format name -> parser class
PARSERS = _registry(LammpsLog, LammpsDump, GromacsLog)

__all__ = ["PARSERS", "Parser"]
