"""A keeper's files and lifeline: what lets a run outlive its agent.

`agent.keeper` uses these when the pool gives it files (``--output``):

- `Copier`: the code's stdout and stderr are pipes into the keeper, which
  appends them, as they come, to the output file as records (`encode`: the
  stream, 1 or 2, the length, the bytes). One file keeps the order in which
  stdout and stderr came, so an agent that reads it again from the start
  (a successor, after a crash) rebuilds the same log and frames at the
  same offsets. The file is the agent's, outside the run directory: a
  sandboxed code can neither see nor replace it.
- `Lifeline`: the keeper's unix socket. Its current agent holds a
  connection to it; the end of that connection is the agent's end. The
  keeper then waits ``orphan_secs`` for a successor to connect (a new agent
  that found the run in its run table) and, if none does, ends the tree as
  if told to by `KILL_SIGNAL` and says so in its status.
- `write_status`: the keeper's last word (the code's return code, and
  whether it was orphaned), replaced atomically once the tree is gone, so
  an agent that is not the keeper's parent knows how the run ended.

Stdlib only, and no import of the `agent` package: the keeper loads it by
path (``python -I -S``). `Decoder` and `read_status` are the agent's side.
"""

import json
import os
import select
import socket
import struct
import threading
import time

#: a record's header: stream (1: stdout, 2: stderr) and length
HEADER = struct.Struct(">BI")

#: most bytes the keeper reads from a pipe at once (and so in one record)
CHUNK_BYTES = 64 * 1024


def encode(stream, data):
    return HEADER.pack(stream, len(data)) + data


class Decoder:
    """Records in (any split), ``(stream, bytes)`` out; a partial record waits."""

    def __init__(self):
        self._pending = b""
        self.broken = False

    def feed(self, data):
        b = self._pending + data if self._pending else data
        rv = []
        i = 0
        h = HEADER.size
        while len(b) - i >= h:
            s, n = HEADER.unpack_from(b, i)
            if s not in (1, 2) or n > CHUNK_BYTES:
                # not written by a keeper: nothing after it can be trusted
                self.broken = True
                self._pending = b""
                return rv
            if len(b) - i - h < n:
                break
            rv.append((s, b[i + h : i + h + n]))
            i += h + n
        self._pending = b[i:]
        return rv

    def reset(self):
        """The file was read again from its start."""
        self._pending = b""


class Copier(threading.Thread):
    """Appends what comes from the code's pipes to the output file, as records.

    Args:
        pipes (dict): read fd -> stream (1 or 2)
        out_fd (int): the output file, opened for appending
    """

    def __init__(self, pipes, out_fd):
        super().__init__(name="copier", daemon=True)
        self._pipes = dict(pipes)
        self._out = out_fd
        self._wake_r, self._wake_w = os.pipe()
        self.write_failed = None

    def finish(self, timeout_secs):
        """The tree is gone: copy what is left in the pipes, then stop."""
        os.write(self._wake_w, b".")
        self.join(timeout_secs)

    def run(self):
        p = select.poll()
        for fd in self._pipes:
            p.register(fd, select.POLLIN)
        p.register(self._wake_r, select.POLLIN)
        while self._pipes:
            for fd, _ in p.poll():
                if fd == self._wake_r:
                    self._drain()
                    return
                if self._copy(fd) == 0:
                    p.unregister(fd)

    def _copy(self, fd):
        """One read of `fd` copied: its length, 0 at its end, None if nothing is there."""
        try:
            b = os.read(fd, CHUNK_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            b = b""
        if not b:
            del self._pipes[fd]
            os.close(fd)
            return 0
        self._write(encode(self._pipes[fd], b))
        return len(b)

    def _drain(self):
        # the keeper itself holds the stderr pipe (its own messages): no
        # end comes, so read what is there
        for fd in list(self._pipes):
            os.set_blocking(fd, False)
            while self._copy(fd):
                pass

    def _write(self, data):
        m = memoryview(data)
        while m:
            try:
                n = os.write(self._out, m)
            except OSError as e:
                # the disk is full: the code must not block on its pipes
                self.write_failed = str(e)
                return
            m = m[n:]


class Lifeline(threading.Thread):
    """The keeper's link to its agent; `on_orphaned` when none is left long enough.

    Args:
        listen_fd (int): a listening unix socket (successors connect to it)
        conn_fd (int): the connection of the agent that started the keeper
        orphan_secs (float): how long without an agent before `on_orphaned`
        on_orphaned (callable): called once, from this thread
    """

    def __init__(self, listen_fd, conn_fd, orphan_secs, on_orphaned):
        super().__init__(name="lifeline", daemon=True)
        self._listen = socket.socket(fileno=listen_fd)
        self._conn = socket.socket(fileno=conn_fd)
        self.orphan_secs = orphan_secs
        self._on_orphaned = on_orphaned
        self.orphaned = False

    def run(self):
        since = None
        while True:
            p = select.poll()
            p.register(self._listen, select.POLLIN)
            if self._conn is not None:
                p.register(self._conn, select.POLLIN)
                t = None
            else:
                t = max(0.0, since + self.orphan_secs - time.monotonic()) * 1000
            ev = p.poll(t)
            if not ev and self._conn is None:
                self.orphaned = True
                # a successor that comes now finds the run ending (its status)
                self._listen.close()
                self._on_orphaned()
                return
            for fd, _ in ev:
                if self._conn is not None and fd == self._conn.fileno():
                    if not self._heard():
                        self._conn.close()
                        self._conn = None
                        since = time.monotonic()
                elif fd == self._listen.fileno():
                    self._adopted()
                    since = None

    def _heard(self):
        """False once the agent's end is closed (it died or let go)."""
        try:
            return bool(self._conn.recv(64))
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _adopted(self):
        try:
            c, _ = self._listen.accept()
        except OSError:
            return
        if self._conn is not None:
            # the newest agent is the one that counts
            self._conn.close()
        self._conn = c


def write_status(path, returncode, orphaned):
    """The keeper's last word, replaced atomically (a reader sees all or nothing).

    Args:
        returncode (int): the code's, as asyncio gives it (-N: signal N)
        orphaned (bool): ended because no agent was left
    """
    t = f"{path}.tmp"
    with open(t, "w") as f:
        json.dump({"returncode": returncode, "orphaned": orphaned}, f)
    os.replace(t, path)


def read_status(path):
    """The keeper's status, or None if it wrote none (it is running, or was killed)."""
    try:
        with open(path) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(s, dict) or not isinstance(s.get("returncode"), int):
        return None
    return s
