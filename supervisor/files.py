"""A simulation's files: outputs to list and download, inputs to upload.

Outputs live in the run directory, written by the agent: on this host for
the local and docker drivers, on the login node for drivers with
`remote_files` (sbatch), where they are listed and fetched through the
user's agent, in chunks. Inputs are uploaded to ``inputs/<user>/<sim>/`` and
sent to the agent with each run. Paths are resolved inside the simulation's
own directories only; symlinks that simulation code made are never followed.

What a user stores counts against their plan's ``max_stored_bytes``
(`usage`): an upload that would pass it is refused (413 ``quota_exceeded``),
from its declared length before it is read (`upload_room`), and a user over
it may start no run (409 ``quota_exceeded``) until they delete some.
"""

import asyncio
import base64
import os
import pathlib
import stat

from pykern.pkdebug import pkdlog

from agent.codes import stats
from supervisor import agents, catalog, dispatch, errors, job, names, store, usage

#: one file op through an agent
_FILE_OP_SECS = 60.0
#: bytes per fetch_file of a download through an agent
_FETCH_CHUNK_BYTES = 1024 * 1024


class Files:
    def __init__(self, cfg, store_, drivers, agents_, sims, plan_of, library):
        """
        Args:
            sims (sim_store.SimStore): where inputs go, and the `usage`
            plan_of (callable): user name -> `resources.Plan`
            library (library.Library): files that `file` parameters name
        """
        self.library = library
        self._cfg = cfg
        self._store = store_
        self._drivers = drivers
        self._agents = agents_
        self._sims = sims
        self._plan_of = plan_of
        self._usage = sims.usage

    def inputs_dir(self, sim):
        return self._sims.inputs_dir(sim)

    # --- stored bytes ----------------------------------------------------------

    def upload_room(self, user, sim_id, name):
        """How many bytes an upload to `sim_id` may have, and the error past it.

        Returns:
            tuple: (int, errors.Error)
        """
        sim = self._sims.get(user, sim_id)
        m = self._plan_of(sim.user).max_stored_bytes
        n = self._usage.bytes_of(sim.user)
        # a file replaced gives its room back
        old = self._usage.get(sim.user, sim.id, usage.input_part(name)) if name else 0
        return max(0, m - n + old), errors.TooLarge(
            "quota_exceeded",
            f"the plan keeps at most {m} bytes of {sim.user}'s and {n} are stored:"
            " delete simulations to make room for this upload",
        )

    def check_room(self, sim):
        """A run needs room for its outputs: refused while its user is over."""
        m = self._plan_of(sim.user).max_stored_bytes
        n = self._usage.bytes_of(sim.user)
        if n >= m:
            raise errors.Conflict(
                "quota_exceeded",
                f"{sim.user} stores {n} bytes, the plan's limit is {m}:"
                " delete simulations to run again",
            )

    def run_fields(self, sim, code, plan):
        """What the op of a run of `sim` carries besides its code: the
        plan's limits (`run_limits`) and the library files it links."""
        r = self.run_limits(sim, plan)
        x = _site_files(sim, code)
        if x:
            r["site_files"] = x
        if self._drivers[sim.job.driver].files_remote(sim.job.host):
            # the agent fetches them (`staging`)
            x = self.library.items(sim, code)
            if x:
                r["library"] = x
            return r
        links = self.library.stage(sim, code, self._sims.run_root / sim.user)
        if links:
            r["links"] = links
        return r

    def run_limits(self, sim, plan):
        """The plan's limits of one run of `sim`, as its op carries them.

        ``max_bytes`` is the room its run directory has: the plan's stored
        bytes less what the user keeps elsewhere (the run directory it
        replaces is not counted). The agent ends the run past it
        (`agent.space`); sbatch runs keep their files on the login node and
        are not counted here.
        """
        r = dict(max_memory_bytes=plan.max_run_memory_bytes, max_pids=plan.max_run_pids)
        if self._drivers[sim.job.driver].checks_room:
            n = self._usage.bytes_of(sim.user) - self._usage.get(
                sim.user, sim.id, usage.RUN
            )
            r["max_bytes"] = max(0, plan.max_stored_bytes - n)
            if self._drivers[sim.job.driver].files_remote(sim.job.host):
                # the user's volume there: a code may write beside its directory
                r["max_bytes_root"] = True
        return r

    # --- outputs -------------------------------------------------------------

    async def list(self, user, sim_id):
        """``{files: [{path, size, mtime}], inputs: [names]}``."""
        sim = self._sims.get(user, sim_id)
        a = await self._remote_agent(sim)
        if a is None:
            return await asyncio.to_thread(
                _list_files, self._run_dir(sim), self.inputs_dir(sim)
            )
        r = await self._agent_op(a, "list_files", path=sim.id)
        return {
            "files": r["files"],
            "inputs": await asyncio.to_thread(_input_names, self.inputs_dir(sim)),
        }

    async def read_output(self, user, sim_id, path, write):
        """Send an output file to `write` (async, bytes) in chunks.

        Returns:
            str: the file's name
        """
        sim = self._sims.get(user, sim_id)
        names.output_path(path)
        a = await self._remote_agent(sim)
        if a is None:
            with self._open_output(sim, path) as f:
                # off the event loop, and no faster than the client reads
                while c := await asyncio.to_thread(f.read, 256 * 1024):
                    await write(c)
            return pathlib.PurePosixPath(path).name
        o = 0
        while True:
            r = await self._agent_op(
                a,
                "fetch_file",
                path=f"{sim.id}/{path}",
                max_bytes=_FETCH_CHUNK_BYTES,
                offset=o,
            )
            m = self._cfg.max_fetch_bytes
            if m and r["size"] > m:
                raise errors.TooLarge(
                    "too_large",
                    f"{path} is {r['size']} bytes; downloads through an agent are"
                    f" limited to {m}",
                )
            c = base64.b64decode(r["content_b64"])
            o += len(c)
            if c:
                await write(c)
            if not r["truncated"] or not c or (m and o >= m):
                return pathlib.PurePosixPath(path).name

    async def save_to_library(self, user, sim_id, path, name):
        """Copy output `path` of `sim_id` into `user`'s library as `name`
        (streamed, as a download is: no file in memory); its entry."""
        self._sims.get(user, sim_id)
        names.output_path(path)
        u = await self.library.begin_copy(user, name)

        async def write(chunk):
            u.write(chunk)

        try:
            await self.read_output(user, sim_id, path, write)
            return await u.finish()
        finally:
            self.library.end(u, drop=True)

    async def remove_remote(self, sim):
        """A deleted simulation's run directory where it is not on this host
        (a Docker volume, a login node), through the agent; best effort."""
        try:
            a = await self._remote_agent(sim)
            if a is not None:
                await self._agent_op(a, "remove_dir", path=sim.id)
        except errors.Error as e:
            pkdlog("{} run dir left on host={} error={}", sim, sim.job.host, e)

    async def _remote_agent(self, sim):
        """The agent that holds `sim`'s run directory, if it is not on this host.

        A driver that starts agents itself (a Docker host of volume storage)
        starts one for the files if none is there (its idle time ends it).

        Raises:
            errors.Conflict: its user must sign in to the host first, or the
                agent did not start
        """
        j = sim.job
        d = self._drivers.get(j.driver) if j.driver else None
        if d is None or not j.host or not d.files_remote(j.host):
            return None
        a = self._agents.connected(sim.user, j.driver, j.host)
        if a is not None:
            return a
        if d.needs_login:
            raise errors.Conflict(
                "sign_in_required",
                f"the files are on {j.host}: sign in there to see them",
            )

        async def _ready(key):
            return self._agents.check_ready(*key)

        try:
            return await asyncio.wait_for(
                dispatch.dispatch(_ready, (sim.user, j.driver, j.host)),
                self._cfg.agent_start_timeout_secs,
            )
        except (TimeoutError, agents.AgentStartFailed) as e:
            raise errors.Conflict(
                "agent_unavailable",
                f"no agent on {j.host} to read the files: {e or 'it did not start'}",
            ) from None

    async def _agent_op(self, agent, kind, **fields):
        try:
            return await self._agents.call(agent, kind, _FILE_OP_SECS, **fields)
        except (agents.AgentGone, TimeoutError) as e:
            raise errors.Conflict(
                "agent_unavailable", f"the agent on {agent.host} did not answer: {e}"
            ) from None
        except agents.OpFailed as e:
            # the agent refuses only paths it has no file for (or may not show)
            raise errors.NotFound("unknown_file", str(e)) from None

    def _run_dir(self, sim):
        """The run directory, refused if simulation code made it a symlink."""
        d = self._sims.run_dir(sim)
        # run_root is resolved; the user and simulation parts are writable by
        # the simulation (its agent's run root), so they must be real dirs
        for p in (d.parent, d):
            if p.is_symlink():
                pkdlog("{} run dir component is a symlink path={}", sim, p)
                return None
        return d

    def _open_output(self, sim, path):
        """The output file `path` of `sim`'s run directory, open for reading.

        The run's code owns its directory and may swap a symlink in at any
        moment: the file is opened without following a last symlink (nor
        blocking on a FIFO), and what was opened is checked, by its real
        path and its type, not the name beforehand.
        """
        d = self._run_dir(sim)
        try:
            if d is None:
                raise FileNotFoundError(path)
            fd = os.open(
                d / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except (OSError, ValueError) as e:
            raise errors.NotFound("unknown_file", f"no file {path}") from e
        try:
            real = pathlib.Path(os.readlink(f"/proc/self/fd/{fd}"))
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not real.is_relative_to(
                d.resolve()
            ):
                raise errors.NotFound("unknown_file", f"no file {path}")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    # --- inputs --------------------------------------------------------------

    async def put_input(self, user, sim_id, name, content):
        """Store an uploaded input file of a simulation (not while it runs)."""
        sim = self._sims.get(user, sim_id)
        if sim.job.status in job.ACTIVE:
            raise errors.Conflict("running", "inputs cannot change while it runs")
        if name is None:
            raise errors.BadInput("bad_name", "give the file's name as ?name=")
        names.input_name(name)
        if len(content) > self._cfg.max_upload_bytes:
            raise errors.TooLarge(
                "too_large",
                f"input files are limited to {self._cfg.max_upload_bytes} bytes",
            )
        try:
            content.decode()
        except UnicodeDecodeError as e:
            raise errors.BadInput("not_text", "input files must be UTF-8 text") from e
        r, e = self.upload_room(user, sim_id, name)
        if len(content) > r:
            raise e
        # counted before the write, so uploads at once cannot pass the cap
        k = usage.input_part(name)
        old = self._usage.get(sim.user, sim.id, k)
        self._usage.set(sim.user, sim.id, k, len(content))
        try:
            await self._store.call(
                store.write_atomic, self.inputs_dir(sim) / name, content
            )
        except BaseException:
            # the old file is still there (the write is atomic), unless the
            # simulation went meanwhile
            if not sim.deleted:
                self._usage.set(sim.user, sim.id, k, old)
            raise
        return {"name": name, "size": len(content)}

    async def run_inputs(self, user, sim, code):
        """Input files for a run op: the uploads and analysis sources.

        Raises:
            errors.Conflict: the user stores more than the plan allows
        """
        self.check_room(sim)
        return self.run_inputs_of(
            user, sim, code, await asyncio.to_thread(read_uploads, self.inputs_dir(sim))
        )

    def uploads_now(self, sim):
        """The uploads of `sim`, read on the loop (a restart's recovery)."""
        return read_uploads(self.inputs_dir(sim))

    def run_inputs_of(self, user, sim, code, uploads):
        """`run_inputs`, given the uploads already read."""
        res = dict(uploads)
        u = code.adapter.upload
        if u is not None and u not in res:
            raise errors.Conflict(
                "input_missing",
                f"code {code.name} runs your own deck: upload it as {u} first",
            )
        for n, t in code.adapter.inputs(sim.params).items():
            if n in res:
                raise errors.Conflict(
                    "input_conflict",
                    f"the input {n} is the deck code {code.name} makes from the "
                    "parameters: delete the upload or rename it",
                )
            res[n] = t
        for p in code.params:
            if p["type"] == "simulation":
                src = self._sims.get(user, sim.params.get(p["name"]))
                res[stats.SOURCE_FILE] = self._sims.frames_text(src)
        n = sum(len(v) for v in res.values())
        if n > self._cfg.max_inputs_chars:
            raise errors.TooLarge(
                "inputs_too_large",
                f"inputs of {n} characters exceed the limit of {self._cfg.max_inputs_chars}",
            )
        return res


def _site_files(sim, code):
    """Files the site provides that `sim`'s parameters name: name in the
    run directory -> its path where the run goes (never sent)."""
    res = {}
    for p in code.params:
        v = sim.params.get(p["name"])
        if p["type"] == "file" and v and v.startswith(catalog.SITE_PREFIX):
            res[p.get("as") or v[len(catalog.SITE_PREFIX) :]] = p["site"][
                v[len(catalog.SITE_PREFIX) :]
            ]
    return res


def read_uploads(path):
    """The uploaded input files of a simulation (blocking: use a thread)."""
    if not path.exists():
        return {}
    return {f.name: f.read_text() for f in sorted(path.iterdir())}


def _input_names(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def _list_files(run_dir, inputs_dir):
    """Files of a run (no symlinks followed) and its inputs; blocking."""
    res = []
    if run_dir is not None:
        for top, dirs, files in os.walk(run_dir, followlinks=False):
            dirs.sort()
            for f in sorted(files):
                p = pathlib.Path(top) / f
                try:
                    st = p.lstat()
                except OSError:
                    # removed (or replaced) by the run meanwhile
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                res.append(
                    {
                        "path": str(p.relative_to(run_dir)),
                        "size": st.st_size,
                        "mtime": st.st_mtime,
                    }
                )
    return {"files": res, "inputs": _input_names(inputs_dir)}
