"""The agent's websocket client: reports runs to the supervisor and takes its ops.

The agent dials out to the supervisor's ``/agent`` websocket and keeps
reconnecting (exponential backoff, full jitter) for as long as it has work;
a supervisor restart never kills runs. The `agent.run.Run` records are the source
of truth; per run, `_Cursors` say how much of it the supervisor has. Sending
live is advancing the cursors while connected; after a reconnect the
``welcome`` resets them to what the supervisor holds, and the agent sends the
rest (frames, log, progress, end state). Dialing and the backoff are
`agent.connection`.
"""

import asyncio
import os
import socket
import time

import tornado.websocket

import agent
from agent import connection, files, pool, protocol, records, slurm, staging
from agent.log import log, stack
from agent.tasks import Tasks

#: log text is sent at most this often per connection, or at once past
#: `LOG_FLUSH_CHARS`, and always before ``exited``
LOG_FLUSH_SECS = 0.1
LOG_FLUSH_CHARS = 64 * 1024

#: one ``log`` message holds at most this much (JSON may escape a char to 6 bytes)
MAX_LOG_MESSAGE_CHARS = 512 * 1024


async def main(args, secret):
    """Run the agent until ``shutdown``, a stop, or giving up.

    Args:
        args (argparse.Namespace): see `agent.__main__`
        secret (str): the agent's secret (never logged)
    Returns:
        int: exit code
    """
    return await Client(args, secret).run()


class _Cursors:
    """How much of one run the supervisor has (or has been sent)."""

    def __init__(self, frames_next=0, log_next=0):
        self.frames_next = frames_next
        self.log_next = log_next
        self.progress_sent = None
        self.exited_sent = False
        self.batch_sent = None
        self.staging_sent = None
        #: kept across connections: only the first connection is told
        self.started_sent = False


class Client:
    """One agent: the pool, the connection loop and the op handlers.

    Args:
        args (argparse.Namespace): url, agent_id, run_root, kill_grace_secs,
            max_procs, max_analyses, max_backoff_secs, give_up_secs
        secret (str): sent as a bearer token, never logged
        sandbox (agent.sandbox.Bare): wraps each local run (default: none)
        cgroups (agent.cgroup.Layout): where local runs' cgroups go (default: none)
    """

    def __init__(self, args, secret, sandbox=None, cgroups=None):
        self.args = args
        self._ws = None
        #: fetches of library files, for agents that cannot see the
        #: supervisor's disk (a login node, a Docker host of storage: volume)
        self.library = staging.Requests(self._send)
        if getattr(args, "slurm", False):
            self.pool = slurm.SlurmPool(
                library=self.library,
                run_root=args.run_root,
                work_dir=args.work_dir,
                on_event=self._on_run_event,
                kill_grace_secs=args.kill_grace_secs,
                max_procs=args.max_procs,
            )
        else:
            c = getattr(args, "library_cache", None)
            self.pool = pool.Pool(
                run_root=args.run_root,
                kill_grace_secs=args.kill_grace_secs,
                max_procs=args.max_procs,
                max_analyses=args.max_analyses,
                on_event=self._on_run_event,
                oom_score_adj=getattr(args, "sim_oom_score_adj", None),
                sandbox=sandbox,
                cgroups=cgroups,
                work_dir=getattr(args, "work_dir", None),
                owner=args.agent_id,
                orphan_secs=getattr(args, "orphan_secs", 0.0),
                library_cache=c and staging.Cache(c, self.library),
            )
        u = getattr(args, "unix_socket", None)
        #: a network-less container reaches the supervisor through a socket file
        self._resolver = connection.UnixResolver(path=u) if u else None
        self._secret = secret
        self._welcomed = False
        #: run_id -> _Cursors, for the runs the supervisor knows about
        self._cursors = {}
        self._handlers = self._handler_table()
        self._tasks = Tasks("client")
        self._log_flush_timer = None
        self._stopping = False
        #: set once every run has ended after a stop
        self._stop = asyncio.Event()
        self._last_contact_secs = time.monotonic()
        # before the first hello: it names them, with what they hold
        self.pool.reattach()

    async def run(self):
        """Connect, serve, reconnect until stopped or given up.

        Returns:
            int: exit code
        """
        a = 0
        try:
            while not self._stop.is_set():
                if await self._connect_and_serve():
                    a = 0
                if self._stop.is_set():
                    break
                if self._should_give_up():
                    log(
                        "give_up",
                        no_contact_secs=round(
                            time.monotonic() - self._last_contact_secs
                        ),
                    )
                    break
                d = connection.backoff_secs(
                    a, connection.INITIAL_BACKOFF_SECS, self.args.max_backoff_secs
                )
                a += 1
                log("reconnect", attempt=a, delay_secs=round(d, 3))
                try:
                    await asyncio.wait_for(self._stop.wait(), d)
                except TimeoutError:
                    pass
            return 0
        finally:
            await self._destroy()

    def stop(self, cancel_runs=True):
        """Cancel every run (reporting it if connected), then exit; e.g. on SIGTERM.

        Args:
            cancel_runs (bool): False: leave the runs going (Slurm jobs do not
                need the agent; the next agent re-attaches them)
        """
        if self._stopping:
            return
        self._stopping = True
        if cancel_runs:
            self._tasks.spawn(self._shutdown())
        else:
            log("stop_keeping_runs", runs=len(self.pool.running()))
            self._stop.set()
            if self._ws is not None:
                self._ws.close(1000, "agent stopped")

    def _handler_table(self):
        rv = {}
        for k, h in (
            ("welcome", self._op_welcome),
            ("run", self._op_run),
            ("analysis", self._op_run),
            ("cancel", self._op_cancel),
            ("forget", self._op_forget),
            ("fetch_file", self._op_fetch_file),
            ("list_files", self._op_list_files),
            ("put_file", self._op_put_file),
            ("remove_dir", self._op_remove_dir),
            ("library_data", self.library.data),
            ("shutdown", self._op_shutdown),
            ("error", self._op_error),
        ):
            assert k not in rv, f"duplicate handler kind={k}"
            assert k in protocol.TO_AGENT, f"unknown kind={k}"
            rv[k] = h
        assert set(rv) == set(protocol.TO_AGENT), set(protocol.TO_AGENT) - set(rv)
        return rv

    async def _connect_and_serve(self):
        """One connection; returns True if it got to ``welcome``."""
        try:
            ws = await connection.connect(
                self.args.url, self.args.agent_id, self._secret, self._resolver
            )
        except Exception as e:
            # refused, unreachable, or rejected at the upgrade (401/403/404)
            log("connect_failed", url=self.args.url, error=connection.brief(e))
            return False
        if self._stop.is_set():
            ws.close(1000, "shutdown")
            return False
        log("connected", url=self.args.url)
        # small frames go out in bursts (log, progress, exited): without
        # this, Nagle and delayed ACKs hold the second one ~40 ms
        ws.protocol.set_nodelay(True)
        self._ws = ws
        welcomed = False
        try:
            self._send("hello", **self._hello())
            while True:
                m = await ws.read_message()
                if m is None:
                    break
                self._receive(m)
                welcomed = welcomed or self._welcomed
        finally:
            self._ws = None
            self._welcomed = False
            self.library.down()
            if self._log_flush_timer:
                self._log_flush_timer.cancel()
                self._log_flush_timer = None
            if welcomed:
                self._last_contact_secs = time.monotonic()
            ws.close()
            log("disconnected", code=ws.close_code, reason=ws.close_reason)
        return welcomed

    def _hello(self):
        return dict(
            agent_id=self.args.agent_id,
            version=agent.VERSION,
            host=socket.gethostname(),
            pid=os.getpid(),
            runs=[
                dict(
                    run_id=r.run_id,
                    state="exited" if r.is_exited else "running",
                    frames=len(r.frames),
                    log_chars=r.log.end,
                )
                for r in self.pool.runs.values()
            ],
        )

    def _receive(self, text):
        try:
            m = protocol.parse(protocol.TO_AGENT, text)
        except protocol.ProtocolError as e:
            log("bad_frame", error=str(e))
            self._send("error", message=f"bad frame: {e}")
            return
        k = m["kind"]
        if not self._welcomed and k not in ("welcome", "error"):
            log("op_before_welcome", kind=k)
            self._send("error", message=f"kind={k} before welcome")
            return
        try:
            self._handlers[k](m)
        except Exception as e:
            log("op_error", kind=k, error=stack(e))
            if "op_id" in m:
                self._reply(m, False, error=f"agent error: {e!r}")
            else:
                self._send("error", message=f"kind={k} failed: {e!r}")

    def _send(self, kind, **fields):
        """Send if connected; returns False if not (the cursors catch up later)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            f = ws.write_message(protocol.make(protocol.TO_SUPERVISOR, kind, **fields))
        except tornado.websocket.WebSocketClosedError:
            return False
        # a write to a link that died is caught up on the next welcome
        f.add_done_callback(lambda f: f.cancelled() or f.exception())
        return True

    def _reply(self, op, ok, result=None, error=None):
        self._send("reply", op_id=op["op_id"], ok=ok, result=result, error=error)

    def _should_give_up(self):
        return (
            time.monotonic() - self._last_contact_secs >= self.args.give_up_secs
            and not self.pool.running()
        )

    async def _destroy(self):
        await self._tasks.destroy()
        if self._log_flush_timer:
            self._log_flush_timer.cancel()
            self._log_flush_timer = None
        self.pool.destroy()
        await self.pool.join()

    # ---- run records -> supervisor

    def _on_run_event(self, run, kind):
        self._sync(run, flush_log=kind == "exited")

    def _sync(self, run, flush_log=False):
        """Send what the supervisor lacks of `run`, if connected and welcomed."""
        c = self._cursors.get(run.run_id)
        if c is None or not self._welcomed:
            return
        i = run.run_id
        if run.pid is not None and not c.started_sent:
            c.started_sent = True
            self._send("started", run_id=i, pid=run.pid)
        if run.staging and c.staging_sent != run.staging:
            c.staging_sent = dict(run.staging)
            self._send("staging", run_id=i, **run.staging)
        b = run.batch
        if b and b["job_id"] and c.batch_sent != b:
            c.batch_sent = dict(b)
            self._send("batch_state", run_id=i, **b)
        while c.frames_next < len(run.frames):
            f = run.frames[c.frames_next]
            if f is not None:
                # (None: a re-attach's gap, held by the supervisor already)
                self._send("frame", run_id=i, seq=c.frames_next, data=f)
            c.frames_next += 1
        if run.progress is not None and run.progress != c.progress_sent:
            c.progress_sent = run.progress
            self._send("progress", run_id=i, progress=run.progress)
        if run.log.end > c.log_next:
            if flush_log or run.is_exited or run.log.end - c.log_next > LOG_FLUSH_CHARS:
                self._send_log(run, c)
            elif self._log_flush_timer is None:
                self._log_flush_timer = asyncio.get_running_loop().call_later(
                    LOG_FLUSH_SECS, self._flush_logs
                )
        if run.is_exited and not c.exited_sent:
            c.exited_sent = True
            res = run.result()
            self._send(
                "exited",
                run_id=i,
                status=run.status,
                exit_code=run.exit_code,
                error=run.error,
                **({} if res is None else {"result": res}),
            )

    def _send_log(self, run, cursors):
        while cursors.log_next < run.log.end:
            o, t = run.log.text_from(cursors.log_next, MAX_LOG_MESSAGE_CHARS)
            self._send("log", run_id=run.run_id, offset=o, text=t)
            cursors.log_next = o + len(t)

    def _flush_logs(self):
        self._log_flush_timer = None
        if not self._welcomed:
            return
        for i, c in self._cursors.items():
            r = self.pool.runs.get(i)
            if r is not None and r.log.end > c.log_next:
                self._send_log(r, c)

    # ---- ops from the supervisor

    def _op_welcome(self, msg):
        held = msg["runs"]
        self._welcomed = True
        self.library.up()
        self._last_contact_secs = time.monotonic()
        log("welcome", runs=len(held))
        for r in list(self.pool.runs.values()):
            h = held.get(r.run_id)
            if h is None:
                # the supervisor no longer wants it (it has its end state or
                # gave up on it): stop it silently and drop it
                self._cursors.pop(r.run_id, None)
                self._tasks.spawn(self._drop(r.run_id))
                continue
            c = self._cursors.get(r.run_id)
            if c is None:
                c = self._cursors[r.run_id] = _Cursors()
                # a record the supervisor adopted has been started
                c.started_sent = True
            r.fill_gap(h["frames_next"])
            c.frames_next = min(h["frames_next"], len(r.frames))
            c.log_next = min(h["log_next"], r.log.end)
            c.progress_sent = None
            c.batch_sent = None
            c.staging_sent = None
            c.exited_sent = False
            self._sync(r, flush_log=True)

    async def _drop(self, run_id):
        log("drop_run", run_id=run_id)
        await self.pool.cancel(run_id)
        if run_id not in self._cursors:
            self.pool.forget(run_id)

    def _op_run(self, msg):
        if self._stopping:
            self._send(
                "exited",
                run_id=msg["run_id"],
                status="error",
                exit_code=None,
                error="agent is shutting down",
            )
            return
        try:
            r = self.pool.start(msg)
        except records.PoolError as e:
            log("run_refused", run_id=msg["run_id"], error=str(e))
            self._send("error", message=str(e))
            return
        self._cursors[r.run_id] = _Cursors()

    def _op_cancel(self, msg):
        async def _cancel():
            await self.pool.cancel(msg["run_id"])
            self._reply(msg, True)

        self._tasks.spawn(_cancel())

    def _op_forget(self, msg):
        i = msg["run_id"]
        if not self.pool.forget(i):
            log("forget_running", run_id=i)
            self._send("error", message=f"forget run_id={i}: it is still running")
            return
        self._cursors.pop(i, None)

    def _op_fetch_file(self, msg):
        self._tasks.spawn(
            self._file_op(
                msg,
                files.read_file,
                self.pool.run_root,
                msg["path"],
                msg["max_bytes"],
                msg.get("offset", 0),
            )
        )

    def _op_list_files(self, msg):
        self._tasks.spawn(
            self._file_op(msg, files.list_files, self.pool.run_root, msg["path"])
        )

    def _op_put_file(self, msg):
        self._tasks.spawn(
            self._file_op(
                msg, files.write_file, self.pool.run_root, msg["path"], msg["content"]
            )
        )

    def _op_remove_dir(self, msg):
        busy = {r.run_dir for r in self.pool.runs.values() if not r.is_exited}
        self._tasks.spawn(
            self._file_op(msg, files.remove_dir, self.pool.run_root, msg["path"], busy)
        )

    async def _file_op(self, msg, func, *args):
        try:
            r = await asyncio.to_thread(func, *args)
        except files.FileError as e:
            self._reply(msg, False, error=str(e))
        except OSError as e:
            self._reply(msg, False, error=f"{e.strerror or e}: {msg['path']}")
        except Exception as e:
            log("file_op_error", kind=msg["kind"], error=stack(e))
            self._reply(msg, False, error=f"agent error: {e!r}")
        else:
            self._reply(msg, True, result=r)

    def _op_shutdown(self, msg):
        log("shutdown")
        self.stop()

    def _op_error(self, msg):
        log("supervisor_error", message=msg["message"])

    async def _shutdown(self):
        await asyncio.gather(*(self.pool.cancel(r.run_id) for r in self.pool.running()))
        self._stop.set()
        ws = self._ws
        if ws is not None:
            # the exited messages are queued ahead of the close frame
            ws.close(1000, "shutdown")
