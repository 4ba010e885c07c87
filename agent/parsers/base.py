"""What every output parser shares: bytes in, whole lines to the format, records out.

A parser is fed the bytes appended to one output file, in pieces cut
anywhere; it hands each complete line to its format's `Parser._line` and
keeps what follows the last newline for the next piece. The records for the
same bytes are the same however they were cut (rows may come in more or
fewer records, and a ``step`` record follows each feed that gave rows).

Bounds: a line longer than ``max_line_bytes`` is dropped (one ``note``
says so) instead of being kept whole, so a parser holds at most that much
of a partial line; formats keep at most one block of their own. No byte
sequence raises: invalid UTF-8 is replaced, a number that does not parse
makes its row or block be skipped. A reader that falls too far behind may
skip bytes (`Parser.gap`): the lines cut are dropped, a block cut is not given.

Pure: no I/O, no asyncio, the standard library only, Python 3.8 and later.
"""

#: the longest line a parser keeps, in bytes without its newline
MAX_LINE_BYTES = 64 * 1024

#: a longer token is no number (a 17-digit float with exponent is ~25)
_MAX_NUMBER_BYTES = 40


class NotANumber(ValueError):
    """A token that is not a number as the codes write them."""


def number(token):
    """The int or float a token (bytes) means; None for nan and inf.

    Raises:
        NotANumber: for anything else
    """
    if len(token) > _MAX_NUMBER_BYTES or b"_" in token:
        # float() and int() take "1_000"; the codes never write it
        raise NotANumber(token)
    if token.isdigit() or (token[:1] in (b"-", b"+") and token[1:].isdigit()):
        return int(token)
    try:
        # on bytes, float() takes ASCII digits only, no hex, no blanks inside
        v = float(token)
    except ValueError:
        raise NotANumber(token) from None
    # JSON has no NaN or Infinity: a gap in a plot
    return v if v - v == 0 else None


def numbers(tokens):
    """`number` of each token, as a list.

    Raises:
        NotANumber: if one is not a number
    """
    return [number(t) for t in tokens]


def text(line):
    """A line (bytes) as str, undecodable bytes replaced."""
    return line.decode("utf-8", "replace")


class Parser:
    """Base of the parsers: splits lines, bounds them, batches rows.

    A format overrides `_line` (and `_partial`, `_end`, `_clear` where it
    keeps more). Options are keyword arguments of ``__init__``; a format
    declares its own and passes the rest here.
    """

    #: the key of the format in `agent.parsers.PARSERS`
    name = ""

    def __init__(self, max_line_bytes=MAX_LINE_BYTES):
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes={max_line_bytes} must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.reset()

    def feed(self, data):
        """Records for the complete lines in the carried partial line + data."""
        out = []
        b = self._pending + data if self._pending else bytes(data)
        self._pending = b""
        if self._dropping:
            i = b.find(b"\n")
            if i < 0:
                return out
            b = b[i + 1 :]
            self._dropping = False
        lines = b.split(b"\n")
        last = lines.pop()
        for x in lines:
            self._line_number += 1
            if len(x) > self.max_line_bytes:
                self._note_long(out)
            else:
                self._line(x[:-1] if x.endswith(b"\r") else x, out)
        if len(last) > self.max_line_bytes:
            self._line_number += 1
            self._note_long(out)
            self._dropping = True
        else:
            self._pending = last
        self._flush_step(out)
        return out

    def finish(self):
        """Records at the end of the run: the partial line, a pending block."""
        out = []
        if self._pending:
            self._line_number += 1
            x = self._pending
            self._pending = b""
            self._partial(x[:-1] if x.endswith(b"\r") else x, out)
        self._dropping = False
        self._end(out)
        self._flush_step(out)
        return out

    def gap(self):
        """Bytes were skipped (not read): what follows goes on from the next
        newline, and the format forgets what the gap cut (`_gap`).

        Returns:
            list: records (a note of a block cut short)
        """
        out = []
        self._pending = b""
        self._dropping = True
        self._gap(out)
        return out

    def reset(self):
        """The file was truncated or replaced: forget everything, start over."""
        self._pending = b""
        #: the rest of an overlong line is skipped up to its newline
        self._dropping = False
        self._line_number = 0
        #: the step of the last row given, and whether a feed gave rows
        self._step = None
        self._step_changed = False
        self._clear()

    # --- for the formats ------------------------------------------------------

    def _clear(self):
        """Set the format's own state to that of an empty file."""

    def _line(self, line, out):
        """One complete line (bytes, no line end): append its records to out."""

    def _partial(self, line, out):
        """The last line, which has no newline: by default, whole if it ends
        in a blank (a number cut short would be read as another number)."""
        if line.endswith((b" ", b"\t")):
            self._line(line, out)

    def _end(self, out):
        """The end of the file: append what a pending block gives."""

    def _gap(self, out):
        """Bytes were skipped: by default, the format starts over (a table
        whose rows go on after a gap keeps its columns instead)."""
        self._clear()

    def _row(self, out, table, run, columns, row, step):
        """Append a row to out: to the last record if it is of that table."""
        o = out[-1] if out else None
        if (
            o is not None
            and o["kind"] == "rows"
            and o["table"] == table
            and o["run"] == run
            and o["columns"] == columns
        ):
            o["rows"].append(row)
        else:
            out.append(
                {
                    "kind": "rows",
                    "table": table,
                    "run": run,
                    "columns": list(columns),
                    "rows": [row],
                }
            )
        if step is not None:
            self._step = step
            self._step_changed = True

    def _flush_step(self, out):
        if self._step_changed:
            out.append({"kind": "step", "step": self._step})
            self._step_changed = False

    def _note_long(self, out):
        out.append(
            {
                "kind": "note",
                "message": f"line {self._line_number} is longer than"
                f" {self.max_line_bytes} bytes: dropped",
            }
        )
