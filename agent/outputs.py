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
- log: ``warning`` and ``note`` lines, marked as the agent's.

With a `agent.reads.Journal`, each read is journaled before it is used and
`replay` makes a re-attached run's frames again exactly as they were.

Memory is bounded by the parsers (a partial line, one block) and by the
run's frame limits; a file that never appears gives no frame and is said so
in the log at the end.
"""

import collections

from agent import follow, parsers

#: the code's error lines kept for the error text
MAX_CODE_ERRORS = 5


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
            )
            self._files.append((s["file"], p, f))

    def replay(self):
        """Before `start`, on a re-attach: the journal's reads again, in order.

        Returns:
            int: reads replayed
        """
        e = self._journal.entries() if self._journal else []
        ends = [0] * len(self._files)
        for i, o in e:
            if i >= len(self._files):
                break
            n, p, f = self._files[i]
            if o == 0:
                p.reset()
            else:
                # below the last end: the name holds a new file (rotated)
                b = f.reread(ends[i] if o > ends[i] else 0, o)
                self._records(n, p.feed(b))
            ends[i] = o
        return len(e)

    def _read(self, index, data):
        n, p, f = self._files[index]
        if self._journal:
            self._journal.add(index, f.offset)
        self._records(n, p.feed(data))

    def _truncated(self, index):
        if self._journal:
            self._journal.add(index, 0)
        self._files[index][1].reset()

    def start(self):
        for _, _, f in self._files:
            f.start()

    def end(self):
        """The code has ended: what is left in each file, and the parsers' last records."""
        for n, p, f in self._files:
            f.read_all()
            f.close()
            self._finish(n, p, f.offset > 0)

    def feed(self, index, data):
        """Bytes appended to file `index` (in ``follow`` order), for a caller
        that reads the files itself instead of `start` (`agent.slurm`)."""
        n, p, _ = self._files[index]
        self._records(n, p.feed(data))

    def reset(self, index):
        """File `index` was truncated: its parser starts over (with `feed`)."""
        self._files[index][1].reset()

    def finish(self, written):
        """The code has ended, for a caller that read the files (`feed`).

        Args:
            written (list): for each file, whether any of it was read
        """
        for (n, p, _), w in zip(self._files, written, strict=True):
            self._finish(n, p, w)

    def close(self):
        for _, _, f in self._files:
            f.close()
        if self._journal:
            self._journal.close()

    def _finish(self, name, parser, written):
        self._records(name, parser.finish())
        if not written:
            self._run.append_log(f"[simvisor agent: {name} was not written]\n")

    def _records(self, name, records):
        r = self._run
        for x in records:
            k = x.get("kind")
            if k == "rows":
                r.add_frame(
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
                r.add_frame(
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


def _step(rows):
    """The step of a rows record's last row (its ``Step`` column), or None."""
    c = rows["columns"]
    if "Step" not in c or not rows["rows"]:
        return None
    return rows["rows"][-1][c.index("Step")]
