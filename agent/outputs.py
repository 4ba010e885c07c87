"""A run's declared output files, followed as they grow: its frames, progress, error.

A code that knows nothing of simvisor writes its results into files. Its
run op lists them (``follow``: the file in the run directory, the parser of
its format from `agent.parsers`, and the parser's options); `Outputs`
follows each (`agent.follow`: inotify events where the filesystem gives
them, a backing-off poll where it does not), or is fed what a caller read
(`feed`: the Slurm pool's journaled reads of a shared filesystem,
`agent.slurm_jobs`), feeds what is appended to its parser, and turns the
records into the run's:

- frames: ``rows`` of a table become ``{"plot": "rows", "file", "table",
  "run", "columns", "rows", "step"}``; a ``snapshot`` becomes ``{"plot":
  "snapshot", "file", "step", "box", "columns", "atoms"}``;
- progress: the last ``step`` over the op's ``steps``;
- error: the code's own ``error`` lines, which name a failed run's error;
- log: ``warning`` and ``note`` lines, marked as the agent's;
- result: every row (before thinning) and frame, to the run's
  `agent.results.Results`.

With a `agent.reads.Journal`, each read is journaled before it is used and
`replay` makes a re-attached run's frames again exactly as they were.

Memory is bounded by the parsers (a partial line, one block), by the run's
frame limits, and by thinning a flood of rows (`ROWS_PER_STRIDE`); a code's
end waits on no backlog (`END_READ_SECS`: a file far behind is read on at
its tail, the bytes not read said in the log, and a skip is journaled as
the line ``N+INDEX OFFSET``, N the count of files); a file that never
appears gives no frame and is said so in the log at the end.
"""

import collections
import zlib

from agent import follow, parsers

#: the code's error lines kept for the error text
MAX_CODE_ERRORS = 5

#: rows of a file kept at each stride: all of the first ones, then one in
#: 2, one in 4, ...: a flood of rows is held in memory that grows with the
#: log of its length (a Python row is ~10 times its JSON)
ROWS_PER_STRIDE = 20_000

#: most bytes of a file parsed per step of the loop: a step of a fast
#: writer's file takes ~0.1 s (a thermo log parses at ~4 MB/s, a dump at
#: ~14), so the agent's other work (a cancel, its pings) waits no longer
READ_BYTES = 512 * 1024

#: at the code's end, what is left of a file is read for at most this long
#: (the agent's loop waits meanwhile); then only its last `END_TAIL_BYTES`
END_READ_SECS = 2.0
END_TAIL_BYTES = 8 * 1024 * 1024


class Outputs:
    """The followers of one run's declared files.

    Args:
        run (agent.run.Run): its ``dir`` is set, ``follow`` and ``steps`` from its op
        inotify (agent.follow.Inotify): None: poll (a shared filesystem)
        journal (agent.reads.Journal): where reads are journaled, or None
    """

    def __init__(self, run, inotify, journal=None):
        self._run = run
        #: the code's own error lines, the last `MAX_CODE_ERRORS`
        self.errors = collections.deque(maxlen=MAX_CODE_ERRORS)
        self._journal = journal
        self._files = []
        for i, s in enumerate(run.follow):
            o = {k: v for k, v in s.items() if k not in ("file", "parser")}
            p = parsers.PARSERS[s["parser"]](**o)
            f = follow.Follower(
                run.dir / s["file"],
                lambda data, i=i: self._read(i, data),
                inotify,
                on_truncated=lambda i=i: self._truncated(i),
                read_bytes=READ_BYTES,
            )
            self._files.append((s["file"], p, f))
        #: per file: [stride, rows kept at it, rows to pass before the next]
        self._thin = [[1, 0, 0] for _ in self._files]

    def replay(self):
        """Before `start`, on a re-attach: the journal's reads again, in order.

        Returns:
            int: reads replayed
        """
        e = self._journal.entries() if self._journal else []
        ends = [0] * len(self._files)
        # files whose bytes are not what was read before (changed meanwhile)
        changed = set()
        for i, o, crc in e:
            if i >= 2 * len(self._files):
                break
            skip = i >= len(self._files)
            if skip:
                # a skip (`_skip`): file i - n went on at o
                i -= len(self._files)
            if i in changed:
                continue
            _, p, f = self._files[i]
            if skip:
                r = p.gap()
                # nothing read: the file is open, its offset at o
                f.reread(o, o)
            elif o == 0:
                p.reset()
                r = []
            else:
                # below the last end: the name holds a new file (rotated)
                s = ends[i] if o > ends[i] else 0
                b = f.reread(s, o)
                if len(b) != o - s or (crc is not None and zlib.crc32(b) != crc):
                    changed.add(i)
                    self._changed(i)
                    continue
                r = p.feed(b)
            ends[i] = o
            # after a change: only the parser's state and the result (the
            # frames of these bytes are among those the agent before us made)
            self._records(i, r, frames=not changed)
        return len(e)

    def _changed(self, index):
        """File `index` is not what the journal read: read anew from its start."""
        n, p, f = self._files[index]
        if self._run.frames_gap_at is None:
            self._run.frames_gap_at = len(self._run.frames)
        p.reset()
        f.reread(0, 0)
        # its rows come again
        self._run.results.restart(index)
        # the supervisor's count may be known already (its welcome)
        self._run.fill_gap()
        self._run.append_log(
            f"[simvisor agent: {n} changed while no agent followed it: read"
            " again from its start]\n"
        )

    def _read(self, index, data):
        _, p, f = self._files[index]
        if self._journal:
            self._journal.add(index, f.offset, zlib.crc32(data))
        self._records(index, p.feed(data))

    def _truncated(self, index):
        if self._journal:
            self._journal.add(index, 0)
        self._files[index][1].reset()

    def start(self):
        for _, _, f in self._files:
            f.start()

    def end(self):
        """The code has ended: what is left in each file, and the parsers' last records.

        A run that was stopped (canceled, timed out, over its bytes) is not
        read on; a file far behind is read for `END_READ_SECS`, then its
        last `END_TAIL_BYTES`: a code's end never waits on a backlog.
        """
        r = self._run
        stopped = r.canceled or r.timed_out or r.over_bytes is not None
        for i, (n, _, f) in enumerate(self._files):
            if stopped:
                u = f.unread_bytes()
                if u:
                    r.append_log(
                        f"[simvisor agent: {n}: its last {u} bytes"
                        " were not read (the run was stopped)]\n"
                    )
            elif not f.read_all(END_READ_SECS):
                self._skip(i, "it was written faster than it could be read")
                f.read_all()
            f.close()
            self._finish(i, f.offset > 0)

    def _skip(self, index, why):
        """Go on at the last `END_TAIL_BYTES` of file `index`, journaled."""
        n, p, f = self._files[index]
        s = f.offset
        o = f.skip(END_TAIL_BYTES)
        if o is None:
            return
        if self._journal:
            self._journal.add(len(self._files) + index, o)
        self._records(index, p.gap())
        self._run.append_log(
            f"[simvisor agent: {n}: {o - s} bytes were not read ({why});"
            f" its last {END_TAIL_BYTES} bytes were]\n"
        )

    def feed(self, index, data):
        """Bytes appended to file `index` (in ``follow`` order), for a caller
        that reads the files itself instead of `start` (`agent.slurm`)."""
        self._records(index, self._files[index][1].feed(data))

    def reset(self, index):
        """File `index` was truncated: its parser starts over (with `feed`)."""
        self._files[index][1].reset()

    def finish(self, written):
        """The code has ended, for a caller that read the files (`feed`).

        Args:
            written (list): for each file, whether any of it was read
        """
        for i, w in enumerate(written):
            self._finish(i, w)

    def close(self):
        for _, _, f in self._files:
            f.close()
        if self._journal:
            self._journal.close()

    def _finish(self, index, written):
        name, parser, _ = self._files[index]
        self._records(index, parser.finish())
        if not written:
            self._run.append_log(f"[simvisor agent: {name} was not written]\n")

    def _records(self, index, records, frames=True):
        """The parser's records of file `index`; `frames`: False, they make
        no frame (its predecessor made them), only the result."""
        r = self._run
        name = self._files[index][0]
        add_frame = r.add_frame if frames else r.results.add_frame
        for x in records:
            k = x.get("kind")
            if k == "rows":
                # all of them, however many a flood thins away
                r.results.add_rows(index, x["table"], x["columns"], x["rows"])
                if not frames:
                    continue
                x["rows"] = self._thinned(index, x["rows"])
                if not x["rows"]:
                    continue
                add_frame(
                    {
                        "plot": "rows",
                        "file": name,
                        "table": x["table"],
                        "run": x.get("run"),
                        "columns": x["columns"],
                        "rows": x["rows"],
                        "step": _step(x),
                    }
                )
            elif k == "snapshot":
                add_frame(
                    {
                        "plot": "snapshot",
                        "file": name,
                        "step": x["step"],
                        "natoms": x["natoms"],
                        "box": x["box"],
                        # a triclinic box's xy, xz, yz (None: orthogonal)
                        "tilt": x.get("tilt"),
                        "columns": x["columns"],
                        "atoms": x["atoms"],
                    }
                )
            elif k == "step":
                if r.steps and isinstance(x.get("step"), int):
                    r.set_progress(min(1.0, max(0.0, x["step"] / r.steps)))
            elif k == "error":
                self.errors.append(x["message"])
            elif k in ("warning", "note"):
                r.append_log(f"[simvisor agent: {name}: {x['message']}]\n")

    def _thinned(self, index, rows):
        """The rows kept of file `index`'s (`ROWS_PER_STRIDE`)."""
        t = self._thin[index]
        stride, kept, skip = t
        if stride == 1 and kept + len(rows) < ROWS_PER_STRIDE:
            t[1] += len(rows)
            return rows
        rv = []
        last = len(rows) - 1
        for j, x in enumerate(rows):
            if skip and j < last:
                # a read's last row is kept: the plot goes to where the file is
                skip -= 1
                continue
            rv.append(x)
            kept += 1
            skip = stride - 1
            if kept >= ROWS_PER_STRIDE:
                if stride == 1:
                    self._run.append_log(
                        f"[simvisor agent: {self._files[index][0]}: more than"
                        f" {ROWS_PER_STRIDE} rows: from here on one in 2 is kept,"
                        f" then one in 4 after {ROWS_PER_STRIDE} more, and so on]\n"
                    )
                stride *= 2
                kept = 0
                skip = stride - 1
        t[:] = [stride, kept, skip]
        return rv


def _step(rows):
    """The step of a rows record's last row (its ``Step`` column), or None."""
    c = rows["columns"]
    if "Step" not in c or not rows["rows"]:
        return None
    return rows["rows"][-1][c.index("Step")]
