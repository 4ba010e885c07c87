"""LAMMPS's log (``log.lammps``, or its screen output): thermo tables, errors, warnings.

Each ``run`` or ``minimize`` prints a table: a header line of column names
(``Step Temp E_pair ...``; it follows the "Per MPI rank memory allocation"
line) and one row of numbers per thermo interval, until "Loop time of ...".
Each table is a ``run`` of its own in the records (numbered from 1), its
columns its own header's; ``thermo_style multi`` prints blocks of
``Name = value`` pairs under a "---- Step N ----- CPU = t (sec) ----" line
instead, given as rows of Step, CPU and the pairs' names.

Records: ``rows`` (table "thermo"), ``step`` (the last row's Step),
``error`` (a line "ERROR: ..." or "ERROR on proc N: ...", as written),
``warning`` (a line "WARNING: ..."), ``note``. A row that is not all
numbers, or has another count of them than its header, is skipped.
"""

import re

from agent.parsers import base

#: the line before a table's header (older versions: "Memory usage per processor")
_MEMORY = (b"Per MPI rank memory allocation", b"Memory usage per processor")
_LOOP = b"Loop time of "
_ERROR = re.compile(rb"ERROR(?: on proc \d+)?: ")
_WARNING = re.compile(rb"WARNING(?: on proc \d+)?: ")
_MULTI_HEAD = re.compile(rb"-+ Step\s+(\S+) -+ CPU =\s+(\S+) \(sec\) -+\s*")
_PAIR = re.compile(rb"(\S+)\s+=\s+(\S+)")
_NAME = re.compile(rb"[A-Za-z_][^\s=]*")

TABLE = "thermo"


class LammpsLog(base.Parser):
    name = "lammps_log"

    def _clear(self):
        #: the columns of the table being read, None outside one
        self._columns = None
        #: where the Step column is in them
        self._step_index = None
        #: tables seen so far; the current one's number
        self._run = 0
        #: the previous line was the memory line: a header comes next
        self._header_next = False
        #: multi style: the columns (None until its first block is whole),
        #: and the block being read as [step, cpu, [(name, value)...]]
        self._multi = False
        self._multi_block = None

    def _line(self, line, out):
        s = line.lstrip()
        if _ERROR.match(line):
            self._end_multi_block(out)
            out.append({"kind": "error", "message": base.text(line)})
            return
        if _WARNING.match(line):
            out.append({"kind": "warning", "message": base.text(line)})
            return
        if line.startswith(_MEMORY):
            self._end_table(out)
            self._header_next = True
            return
        if line.startswith(_LOOP):
            self._end_table(out)
            return
        header_next = self._header_next
        self._header_next = False
        m = _MULTI_HEAD.fullmatch(line)
        if m:
            self._multi_head(m, out)
            return
        if self._multi:
            self._multi_pairs(line, out)
            return
        tokens = s.split()
        if not tokens:
            return
        if self._columns is not None and len(tokens) == len(self._columns):
            try:
                row = base.numbers(tokens)
            except base.NotANumber:
                pass
            else:
                step = row[self._step_index] if self._step_index is not None else None
                self._row(out, TABLE, self._run, self._columns, row, step)
                return
        if (header_next or tokens[0] == b"Step") and all(
            _NAME.fullmatch(t) for t in tokens
        ):
            self._start_table([base.text(t) for t in tokens])

    def _partial(self, line, out):
        if _ERROR.match(line) or _WARNING.match(line):
            # a message cut short is still the code's message
            self._line(line, out)
        else:
            super()._partial(line, out)

    def _end(self, out):
        self._end_table(out)

    def _gap(self, out):
        # the table's rows go on after it; a multi block cut is dropped
        self._multi_block = None
        self._header_next = False

    def _start_table(self, columns):
        self._run += 1
        self._columns = columns
        self._step_index = columns.index("Step") if "Step" in columns else None

    def _end_table(self, out):
        self._end_multi_block(out)
        self._columns = None
        self._step_index = None
        self._multi = False

    # --- thermo_style multi ---------------------------------------------------

    def _multi_head(self, m, out):
        self._end_multi_block(out)
        if not self._multi:
            # a new table; its columns are known when its first block is whole
            self._multi = True
            self._run += 1
            self._columns = None
        try:
            step, cpu = base.numbers(m.groups())
        except base.NotANumber:
            self._multi_block = None
            return
        self._multi_block = [step, cpu, []]

    def _multi_pairs(self, line, out):
        pairs = _PAIR.findall(line)
        if not pairs:
            # the block ended (a blank line, a fix's output, ...)
            self._end_multi_block(out)
            return
        b = self._multi_block
        if b is None:
            return
        b[2].extend(pairs)
        if self._columns is not None and len(b[2]) >= len(self._columns) - 2:
            self._end_multi_block(out)

    def _end_multi_block(self, out):
        b = self._multi_block
        self._multi_block = None
        if not b or not b[2]:
            return
        names = ["Step", "CPU"] + [base.text(n) for n, _ in b[2]]
        try:
            values = base.numbers(v for _, v in b[2])
        except base.NotANumber:
            return
        if self._columns is None:
            self._columns = names
            self._step_index = 0
        elif names != self._columns:
            return
        self._row(out, TABLE, self._run, self._columns, [b[0], b[1], *values], b[0])
