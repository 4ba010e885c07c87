"""GROMACS's ``md.log`` (of ``gmx mdrun``) and its error text: energies, errors.

Every ``nstlog`` steps (every step of a minimisation) mdrun writes a block::

               Step           Time
                  0        0.00000

       Energies (kJ/mol)
            LJ (SR)   Coulomb (SR)   Coul. recip.      Potential    Kinetic En.
        2.82530e+03   -1.56757e+04    4.47484e+02   -1.24029e+04    2.66961e+03
       Total Energy  Conserved En.    Temperature Pressure (bar)
       -9.73331e+03   -9.73331e+03    3.07991e+02    4.81380e+03
    (blank line)

Names are right-aligned in fields of 15 characters (they hold spaces),
values are numbers in such fields. A block gives one row of table
"energies" (Step, Time, then the names) at its closing blank line; a block
with other names than the one before starts another ``run``. The averages
at the end of a run have no Step line and give nothing.

Errors: the text under "Fatal error:" (up to its blank line), as written,
lines joined by newlines; grompp's "ERROR n [file f, line l]:" with its
indented lines. Warnings: grompp's "WARNING n [...]:" blocks and mdrun's
"step N: ..." lines (a water that cannot be settled, ...). grompp's fatal
"Too many warnings" says nothing of them: its error text is followed by the
warnings it counted (the last `_MAX_WARNINGS_TOLD`), so the run's error says why.
"""

import re

from agent.parsers import base

TABLE = "energies"
_FIELD = 15
_ENERGIES = b"Energies ("
_FATAL = b"Fatal error:"
_GROMPP_MESSAGE = re.compile(rb"(ERROR|WARNING) \d+ \[.*\]:\s*")
_STEP_WARNING = re.compile(rb"step \d+: ")
#: a message block keeps at most this many lines
_MAX_MESSAGE_LINES = 50
_TOO_MANY_WARNINGS = "Too many warnings"
#: the warnings kept for a "Too many warnings" error
_MAX_WARNINGS_TOLD = 5


class GromacsLog(base.Parser):
    name = "gromacs_log"

    def _clear(self):
        self._columns = None
        self._run = 0
        #: the energies block being read: see `_Energies`
        self._block = None
        #: an error or warning being read: [kind, [line, ...]]
        self._message = None
        #: the last warnings' texts
        self._warnings = []

    def _line(self, line, out):
        if self._message is not None:
            self._message_line(line, out)
            return
        s = line.strip()
        tokens = s.split()
        if tokens[:2] == [b"Step", b"Time"] and all(t.isalpha() for t in tokens):
            self._end_block(out)
            self._block = _Energies([base.text(t) for t in tokens])
            return
        if s == _FATAL:
            self._end_block(out)
            self._message = ["error", []]
            return
        m = _GROMPP_MESSAGE.fullmatch(line)
        if m:
            self._end_block(out)
            self._message = [m.group(1).decode().lower(), [base.text(line)]]
            return
        if _STEP_WARNING.match(line):
            out.append({"kind": "warning", "message": base.text(line)})
            return
        b = self._block
        if b is None:
            return
        if not s:
            if b.values:
                self._end_block(out)
            return
        if not b.step_values:
            try:
                b.step_values = base.numbers(tokens)
            except base.NotANumber:
                self._block = None
                return
            if len(b.step_values) != len(b.step_names):
                self._block = None
            return
        if s.startswith(_ENERGIES):
            b.in_energies = True
            return
        if not b.in_energies:
            # a line of something else ("DD  step 39 load imb.: ...")
            return
        if b.names is None:
            b.names = _fields(line)
            return
        try:
            values = base.numbers(tokens)
        except base.NotANumber:
            self._block = None
            return
        if len(values) != len(b.names):
            self._block = None
            return
        b.columns.extend(b.names)
        b.values.extend(values)
        b.names = None

    def _partial(self, line, out):
        if self._message is not None:
            self._message_line(line, out)
        else:
            super()._partial(line, out)

    def _end(self, out):
        b = self._block
        # a block the run stopped in is only taken if it is like the others
        if b is not None and b.names is None and b.all_columns() == self._columns:
            self._end_block(out)
        self._block = None
        if self._message is not None:
            self._end_message(out)

    def _end_block(self, out):
        b = self._block
        self._block = None
        if b is None or not b.values or b.names is not None:
            return
        columns = b.all_columns()
        if columns != self._columns:
            self._run += 1
            self._columns = columns
        self._row(
            out, TABLE, self._run, columns, b.step_values + b.values, b.step_values[0]
        )

    def _message_line(self, line, out):
        kind, lines = self._message
        if not line.strip() and (lines or kind != "error"):
            self._end_message(out)
            return
        if line.strip() and len(lines) < _MAX_MESSAGE_LINES:
            lines.append(base.text(line))

    def _end_message(self, out):
        kind, lines = self._message
        self._message = None
        if not lines:
            return
        t = "\n".join(lines)
        if kind == "warning":
            self._warnings = [*self._warnings, t][-_MAX_WARNINGS_TOLD:]
        elif kind == "error" and lines[0].startswith(_TOO_MANY_WARNINGS):
            t = "\n".join((t, *self._warnings))
        out.append({"kind": kind, "message": t})


class _Energies:
    """One energies block as it is read."""

    def __init__(self, step_names):
        self.step_names = step_names
        self.step_values = None
        #: the "Energies (kJ/mol)" line was read
        self.in_energies = False
        #: the names line waiting for its values line
        self.names = None
        self.columns = []
        self.values = []

    def all_columns(self):
        return self.step_names + self.columns


def _fields(line):
    """The names of a names line: its 15-character fields, stripped."""
    t = base.text(line)
    return [
        t[i : i + _FIELD].strip()
        for i in range(0, len(t), _FIELD)
        if t[i : i + _FIELD].strip()
    ]
