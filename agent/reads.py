"""The reads of a local run's followed files, journaled for the agent after us.

A parser makes one frame of each piece of a file it is fed (a rows frame
holds the rows of one read), so a run's frames depend on where the reads
cut its files, and reads follow the writer's flushes. The supervisor holds
a run's frames by their sequence number: an agent that re-attaches the run
(its predecessor died) must make the very frames that one made, or the
supervisor would skip rows it never had and take others twice.

So each read is journaled as a line ``INDEX OFFSET`` (the file's index in
the op's ``follow``, where the read ended; offset 0: the file was
truncated) before its bytes are used, and a successor reads the same
pieces again in the same order (`agent.outputs.Outputs.replay`) before it
follows on. A torn last line (its agent died writing it) was never used
and is cut off. Sbatch runs keep such a journal of their own, for their
stdout as well (`agent.slurm_jobs.JobReads`); local runs' stdout comes
through the keeper's output file, which is read again whole.

Each read's line also holds the CRC-32 of its bytes. A file changed while
no agent followed it (truncated, rewritten, rotated) cannot be read again
as it was: the replay sees the first piece whose bytes differ and stops
making frames there (`agent.outputs.Outputs.replay`); that file is then
read anew from its start, the others from where the journal says, and the
frames made from then on are numbered after those the supervisor holds (a
gap of what the agent before us made and never sent, `agent.run.Run`).
"""

import os

from agent.log import log

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


class Journal:
    """The journal of one run's reads (a file in its run table entry).

    Args:
        path (Path): the journal's file
    """

    def __init__(self, path):
        self.path = path
        self._fd = None

    def create(self):
        """A new run: an empty journal (OSError if it cannot be written)."""
        self._fd = os.open(self.path, _FLAGS | os.O_TRUNC, 0o600)

    def entries(self):
        """The reads of the agent before us, as (index, offset, crc32 of the
        bytes read, or None); then we append.

        Returns:
            list: what the journal's whole, well-formed lines say
        """
        try:
            with open(self.path, "rb") as f:
                b = f.read()
        except FileNotFoundError:
            b = b""
        except OSError as e:
            log("reads_journal_unreadable", path=str(self.path), error=str(e))
            b = b""
        res = []
        used = 0
        for l in b.split(b"\n")[:-1]:
            try:
                x = [int(v) for v in l.split()]
                if len(x) not in (2, 3) or min(x) < 0:
                    raise ValueError(f"line {l[:60]!r}")
            except ValueError as e:
                log("reads_journal_bad", path=str(self.path), error=str(e))
                break
            res.append((x[0], x[1], x[2] if len(x) == 3 else None))
            used += len(l) + 1
        try:
            self._fd = os.open(self.path, _FLAGS, 0o600)
            os.ftruncate(self._fd, used)
        except OSError as e:
            self._failed(e)
        return res

    def add(self, index, offset, crc=None):
        """A read of file `index` ended at `offset` (0: it was truncated);
        `crc`: the CRC-32 of its bytes (a replay checks they are the same)."""
        if self._fd is None:
            return
        try:
            if crc is None:
                os.write(self._fd, b"%d %d\n" % (index, offset))
            else:
                os.write(self._fd, b"%d %d %d\n" % (index, offset, crc))
        except OSError as e:
            self._failed(e)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _failed(self, error):
        # the run goes on; a successor would make other frames of what follows
        log("reads_journal_failed", path=str(self.path), error=str(error))
        self.close()
