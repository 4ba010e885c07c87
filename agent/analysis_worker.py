"""The warm analysis worker: one long-lived process per agent for small analyses.

An analysis code whose catalog entry names a ``worker`` analysis (`agent.analyses`)
is not started as a process of its own: the pool hands it to this worker,
which keeps its interpreter and its imports (numpy) loaded between
requests, so a small analysis answers in milliseconds instead of the cost
of a new Python process. The worker runs in the pool's sandbox, with the
user's run directories as its only files.

Requests and replies are JSON lines on the worker's stdin and stdout:
``{"id", "analysis", "params", "frames"}`` (``frames``: the path of the
source's frames, one JSON frame per line, in the analysis's run directory)
in, ``{"id", "frame"}`` or ``{"id", "error"}`` out. A worker that crashes,
hangs past the request's time or says something else is killed (its
process group) and a new one starts with the next request; the runs are
not its children and do not notice.

`Worker` is the agent's side, `serve_run` an analysis run through it (the
local pool's and the Slurm pool's alike: on a login node the worker runs
beside its agent, not as a job); ``python -m agent.analysis_worker`` the worker.
"""

import asyncio
import json
import os
import signal
import sys

#: the longest reply line (a result frame)
MAX_REPLY_BYTES = 16 * 1024 * 1024

#: the end of the worker's stderr kept for the message of its crash
STDERR_TAIL_BYTES = 8192


class Failed(Exception):
    """The request failed: the analysis's own error, or the worker's end."""


def for_agent(run_root, sandbox, env):
    """The warm worker of an agent whose runs are in `run_root`.

    Args:
        sandbox (agent.sandbox.Bare): around the worker (a `Sandbox` shows
            it `run_root` only)
        env (dict): its clean environment (`agent.launch.environ`); the
            `agent` package is found where this agent's is
    """
    e = dict(env)
    e.setdefault(
        "PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    )
    return Worker(
        sandbox.worker_command(
            str(run_root), [sys.executable, "-m", "agent.analysis_worker"]
        ),
        sandbox.environ(e),
        run_root,
    )


async def serve_run(worker, run, emit, finish):
    """Serve analysis `run` (its op's ``worker``) through `worker`.

    Args:
        emit (callable): ``(run, kind)``, the pool's (``started``)
        finish (callable): ``(run, status, exit_code, error)``, the pool's
    """
    from agent.codes.stats import SOURCE_FILE

    p = {k: v for k, v in run.params.items() if k != "source"}
    run.state = "running"
    run.pid = worker.pid or 0
    emit(run, "started")
    try:
        f = await worker.request(
            run.op["worker"], p, run.dir / SOURCE_FILE, run.max_run_secs
        )
    except Failed as e:
        if run.canceled:
            # its cancel ended the worker
            finish(run, "canceled", None, None)
        else:
            finish(run, "error", None, str(e))
        return
    except asyncio.TimeoutError:
        run.timed_out = True
        finish(
            run, "timed_out", None, f"max run time of {run.max_run_secs} secs exceeded"
        )
        return
    except OSError as e:
        finish(run, "error", None, f"cannot start the analysis worker: {e}")
        return
    run.add_frame(f)
    finish(run, "completed", 0, None)


class Worker:
    """The agent's handle on its warm worker (started on first use).

    Args:
        argv (list): the worker's command line (the pool's sandbox around it)
        env (dict): its environment
        cwd (str): its directory (the run root)
    """

    def __init__(self, argv, env, cwd):
        self._argv = argv
        self._env = env
        self._cwd = cwd
        self._proc = None
        #: the worker's stderr, drained as it comes (a full pipe would stop
        #: it), its last `STDERR_TAIL_BYTES` kept for a crash's message
        self._stderr = b""
        self._drain = None
        self._lock = asyncio.Lock()
        self._ids = iter(range(1, 2**62))
        #: workers started so far (a crash or a kill makes the next one)
        self.starts = 0

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    async def request(self, analysis, params, frames_path, timeout_secs):
        """The analysis's result frame.

        Raises:
            Failed: its error, or the worker crashed (it is started again next time)
            asyncio.TimeoutError: no reply in time (the worker is killed)
        """
        async with self._lock:
            if self._proc is None or self._proc.returncode is not None:
                await self._start()
            i = next(self._ids)
            m = {
                "id": i,
                "analysis": analysis,
                "params": params,
                "frames": str(frames_path),
            }
            try:
                self._proc.stdin.write(json.dumps(m).encode() + b"\n")
                await self._proc.stdin.drain()
                line = await asyncio.wait_for(
                    self._proc.stdout.readline(), timeout_secs
                )
            except asyncio.TimeoutError:
                # first: from 3.11 on it is an OSError too
                await self.kill()
                raise
            except (OSError, ValueError, asyncio.LimitOverrunError) as e:
                await self.kill()
                raise Failed(f"the analysis worker failed: {e}") from e
            except asyncio.CancelledError:
                # a cancel: the worker may be busy with it for long
                await self.kill()
                raise
            try:
                r = json.loads(line) if line else None
            except ValueError:
                r = None
            if not isinstance(r, dict) or r.get("id") != i:
                err = await self._stderr_tail()
                await self.kill()
                raise Failed(f"the analysis worker ended: {err or 'no reply'}")
            if "error" in r:
                raise Failed(str(r["error"]))
            return r["frame"]

    async def kill(self):
        """End the worker now (its group); the next request starts another."""
        p, self._proc = self._proc, None
        if p is None:
            return
        if p.returncode is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        await p.wait()
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None

    async def _start(self):
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            limit=MAX_REPLY_BYTES,
        )
        self.starts += 1
        self._stderr = b""
        self._drain = asyncio.get_running_loop().create_task(
            self._drain_stderr(self._proc.stderr)
        )

    async def _drain_stderr(self, stream):
        while b := await stream.read(65536):
            self._stderr = (self._stderr + b)[-STDERR_TAIL_BYTES:]

    async def _stderr_tail(self):
        # what a dying worker said last: its end of the pipe comes soon
        try:
            await asyncio.wait_for(asyncio.shield(self._drain), 1)
        except (asyncio.TimeoutError, OSError, ValueError):
            pass
        return self._stderr.decode(errors="replace").strip()[-2000:]


def serve(stdin, stdout):
    """The worker's loop: a request per line until stdin ends."""
    from agent import analyses

    for line in stdin:
        try:
            m = json.loads(line)
            i = m["id"]
        except (ValueError, KeyError, TypeError):
            continue
        try:
            f = analyses.ANALYSES[m["analysis"]]
            with open(m["frames"], encoding="utf-8") as x:
                frames = [_frame(json.loads(y)) for y in x if y.strip()]
            r = {"id": i, "frame": f(frames, **m.get("params", {}))}
        except analyses.AnalysisError as e:
            r = {"id": i, "error": str(e)}
        except Exception as e:
            # the analysis's bug or bad input: told, and the worker goes on
            r = {"id": i, "error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(r, separators=(",", ":")) + "\n")
        stdout.flush()


def _frame(x):
    """A frame of the source file (a line may wrap it: ``{"seq", "data"}``)."""
    if isinstance(x, dict) and "plot" not in x and isinstance(x.get("data"), dict):
        return x["data"]
    return x


def main():
    # what the analyses import, loaded once: the first request is fast too
    try:
        import numpy  # noqa: F401
    except ImportError:
        pass
    serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
