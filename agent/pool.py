"""The agent's process pool: starts simulation codes and records what they report.

Each run is a process in its own process group (its own session), started in
its run directory with a clean environment. Its stdout and stderr arrive as
pipe events (`asyncio.SubprocessProtocol`): report lines become progress and
frames, everything else is the run's log. A `Run` holds all of it, so a
client that was disconnected can send what the supervisor missed.

Runs and analyses have separate lanes (semaphores), so an analysis never
waits behind long runs. Pure asyncio and event driven; the one poll is the
wait for a killed process group to empty, since the kernel gives no event for
that.

Also the agent's small shared helpers: `log` (key=value lines on stderr; the
agent depends on the stdlib and tornado only) and `resolve_inside`.
"""

import asyncio
import collections
import ctypes
import datetime
import itertools
import json
import math
import os
import pathlib
import shutil
import signal
import sys

from agent import protocol

#: written into the run directory before the code starts (see agent.codes)
PARAMS_FILE = "params.json"

#: the run's log as a file in its run directory, next to its outputs
LOG_FILE = "run.log"

#: argv element replaced by the agent's own interpreter
PYTHON_ARG = "{python}"

#: log text held in memory per run; beyond it only the tail is kept (the
#: whole log stays in `LOG_FILE`)
MAX_LOG_CHARS = 8 * 1024 * 1024

#: frames held per run, by count and by size of their JSON lines; a code is
#: meant to send about 100 (see agent.codes)
MAX_FRAMES = 100_000
MAX_FRAME_BYTES_HELD = 64 * 1024 * 1024

#: a stdout line longer than this cannot be a report: it goes to the log
MAX_LINE_BYTES = 1024 * 1024

#: stderr lines kept for the error text of a failed run
STDERR_TAIL_LINES = 20
MAX_ERROR_CHARS = 4000

#: after SIGKILL (or after the grace), how long a process group may take to
#: disappear before we give up waiting (a process stuck in the kernel)
GROUP_EXIT_SLACK_SECS = 5.0

#: how long the pipes may stay open after the group is gone (held by a
#: process that left the group) before the run ends without them
PIPE_DRAIN_SECS = 2.0

_REPORT_PREFIX_BYTES = protocol.REPORT_PREFIX.encode()

#: appended to a log chunk rather than starting a new one below this size,
#: so a chatty code does not make millions of tiny chunks
_LOG_MERGE_CHARS = 4096

_PR_SET_PDEATHSIG = 1

_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        # not Linux: runs still get their own group, only not the death signal
        return None


# loaded before any fork: the child only calls it
_prctl = _load_prctl()


def log(event, **fields):
    """Write one ``time event key=value ...`` line to stderr. Never pass a secret.

    Args:
        event (str): what happened, one word
        fields: values; strings with spaces or quotes are JSON quoted
    """
    t = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    p = [t[:-4] + "Z", event]
    for k, v in fields.items():
        s = v if isinstance(v, str) else repr(v)
        if len(s) > 500:
            s = s[:500] + "..."
        if not s or any(c.isspace() or c in "\"'=" for c in s):
            s = json.dumps(s)
        p.append(f"{k}={s}")
    sys.stderr.write(" ".join(p) + "\n")
    sys.stderr.flush()


def resolve_inside(root, path):
    """`path` (relative to `root`) resolved, or None if it is `root` or escapes it.

    Args:
        root (pathlib.Path): resolved directory
        path (str): relative (or absolute) path
    Returns:
        pathlib.Path: resolved, strictly inside `root`; None if not
    """
    if not path or "\0" in path:
        return None
    p = (root / path).resolve()
    if p == root or not p.is_relative_to(root):
        return None
    return p


class PoolError(Exception):
    """A request the pool refuses outright (e.g. a run id it already holds)."""


class LogText:
    """A run's log text: the tail held in memory, addressed by offsets in the whole log.

    `start` is the offset of the first character held, `end` the length of
    the whole log; the client's send cursor is an offset in between.
    """

    def __init__(self, max_chars):
        self.max_chars = max_chars
        self.start = 0
        self.end = 0
        self.trimmed = False
        self._chunks = collections.deque()

    def append(self, text):
        if not text:
            return
        if self._chunks and len(self._chunks[-1]) < _LOG_MERGE_CHARS:
            self._chunks[-1] += text
        else:
            self._chunks.append(text)
        self.end += len(text)
        while self.end - self.start > self.max_chars:
            self.trimmed = True
            c = self._chunks[0]
            x = self.end - self.start - self.max_chars
            if len(c) <= x:
                self._chunks.popleft()
                self.start += len(c)
            else:
                self._chunks[0] = c[x:]
                self.start += x

    def text_from(self, offset, max_chars):
        """Text from `offset` (or from `start` if that was dropped).

        Args:
            offset (int): where the reader is
            max_chars (int): at most this much
        Returns:
            tuple: (offset of the text, text)
        """
        o = max(offset, self.start)
        if o >= self.end:
            return self.end, ""
        # readers are near the end: find the first chunk walking back from it
        s = self.end
        i = len(self._chunks)
        while s > o:
            i -= 1
            s -= len(self._chunks[i])
        rv = []
        n = 0
        for c in itertools.islice(self._chunks, i, None):
            rv.append(c)
            n += len(c)
            if n - (o - s) >= max_chars:
                break
        t = "".join(rv)
        return o, t[o - s : o - s + max_chars]


