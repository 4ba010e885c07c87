"""A local run's keeper as its agent sees it: its files, its output, its end.

`Keeping` is what `agent.pool` holds per run, whether it started the keeper
or re-attached it after an agent before it died: the run's entry in the run
table (`agent.runtable`), its output file followed (`agent.follow`) and
decoded (`agent.keeper_io`) into the run's `agent.run.Output`, and
`exited`, resolved when the keeper process has ended: through asyncio's
child watcher for the agent's own child (`KeeperExit`), through a pidfd
for a keeper it re-attached.
"""

import asyncio
import json
import os

from agent import follow, keeper_io
from agent.run import Output


class Keeping:
    """One run's keeper, seen from its agent.

    Args:
        run (agent.run.Run): its output goes there
        files (agent.runtable.Files): the run's entry
        inotify (agent.follow.Inotify): events for the follower, or None
        release (bool): no agent will read the output again (a temporary
            run table): its disk space is given back as it is read
    """

    def __init__(self, run, files, inotify, release=False):
        self.files = files
        self.out = Output(run)
        #: resolved with the keeper's return code (None: not our child)
        self.exited = asyncio.get_running_loop().create_future()
        #: the keeper was gone before we could watch it (re-attached too late)
        self.gone_at_start = False
        self._run = run
        self._decoder = keeper_io.Decoder()
        self._follower = follow.Follower(
            files.output,
            self._data,
            inotify,
            on_truncated=self._decoder.reset,
            release=release,
        )
        self._pidfd = None

    def follow(self):
        """Follow the output from now on (and read what is there)."""
        self._follower.start()

    def catch_up(self):
        """Read what the output holds now (a re-attach: from its start)."""
        self._follower.read_all()

    def watch_pid(self, pidfd):
        """`exited` when the process of `pidfd` (not our child) ends."""
        self._pidfd = pidfd
        asyncio.get_running_loop().add_reader(pidfd, self._pid_exited)

    def end_output(self):
        """The keeper has ended: read the rest, and a last line without newline."""
        self._follower.read_all()
        self._follower.close()
        self.out.flush()

    def status(self):
        """The keeper's last word (`read_status`), or None."""
        return read_status(self.files.status)

    def close(self):
        """Idempotent."""
        self._follower.close()
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _pid_exited(self):
        asyncio.get_running_loop().remove_reader(self._pidfd)
        if not self.exited.done():
            self.exited.set_result(None)

    def _data(self, data):
        for stream, b in self._decoder.feed(data):
            self.out.pipe_data_received(stream, b)
        if self._decoder.broken:
            self._decoder.broken = False
            self._run.append_log("[simvisor agent: the run's output file is corrupt]\n")


class KeeperExit(asyncio.SubprocessProtocol):
    """The agent's own keeper child: resolves its `Keeping`'s ``exited``."""

    def __init__(self, keeping):
        self._keeping = keeping
        self._transport = None

    def connection_made(self, transport):
        self._transport = transport

    def process_exited(self):
        f = self._keeping.exited
        if not f.done():
            f.set_result(self._transport.get_returncode())


def read_status(path):
    """The status a keeper wrote (`keeper_io.write_status`), or None.

    None: it wrote none (it is running, or it was killed).
    """
    try:
        with open(path) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(s, dict) or not isinstance(s.get("returncode"), int):
        return None
    return s
