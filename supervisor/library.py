"""A user's file library: large binary inputs, stored once by their content.

On disk, under the data directory:

- ``library/blobs/<aa>/<sha256>``: the bytes, read-only, one file per
  content: the same bytes uploaded twice (by anyone) are stored once. A
  blob goes when no entry names it any more.
- ``library/partial/<user>/<key>``: an upload on its way in, kept after a
  dropped connection so that its client can send the rest (`Upload`).
- ``db/library/<user>.json`` (the store): the user's entries, ``{name:
  {sha256, size, uploaded}}``.

An upload streams to a partial file, its SHA-256 computed as it goes (a
resumed upload hashes what had arrived first, in a thread); at its end the
file is synced and renamed to its blob, or dropped if the blob is there,
and only then is the entry saved: a crash or a full disk leaves no entry
without its bytes. What an entry's bytes are is fixed: a new upload of a
name replaces the entry, never the blob another entry may share.

Sizes are checked from the headers before a byte is read, by plan: one
file at most ``max_library_file_bytes``, all of a user's files at most
``max_library_bytes`` (what they name, whatever is shared).
"""

import asyncio
import hashlib
import os
import pathlib
import time

from pykern.pkdebug import pkdlog

from supervisor import errors, job, names, upload

#: a partial upload is named by the hash of its name (any UTF-8 name fits)
_KEY_CHARS = 32
#: where a user's run root holds the library files staged for its runs
STAGED = ".library"
#: uploads of a user interrupted (kept for a resume) or on their way, at most
MAX_PARTS = 8
#: an interrupted upload is kept this long after its last byte
PART_SECS = 24 * 3600


class Library:
    def __init__(self, data_dir, store, plan_of, sim_store, catalog):
        """
        Args:
            plan_of (callable): user name -> `resources.Plan`
            sim_store (sim_store.SimStore): whose parameters name a file
            catalog (catalog.Catalog): which parameters are files
        """
        self.root = pathlib.Path(data_dir).resolve() / "library"
        self._store = store
        self._plan_of = plan_of
        self._sims = sim_store
        self._catalog = catalog
        # user -> name -> entry
        self._entries = {}
        # sha256 -> how many entries name it
        self._refs = {}
        # (user, name) -> the Upload in progress (one at a time per name)
        self._uploading = {}

    def load(self):
        """The entries of every user, from the store; partials stay for resumes."""
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        for key, doc in self._store.load_all("library"):
            u = pathlib.PurePosixPath(key).stem
            self._entries[u] = doc
            for e in doc.values():
                self._refs[e["sha256"]] = self._refs.get(e["sha256"], 0) + 1
        return self

    # --- reading ---------------------------------------------------------------

    def list(self, user):
        """The user's files, by name: name, size, sha256, uploaded, used_by."""
        u = self._uses(user.name)
        return [
            self._public(user.name, n, e, u.get(n, ([], []))[0])
            for n, e in sorted(self._entries.get(user.name, {}).items())
        ]

    def get(self, user, name):
        """One entry (NotFound unless `user` has it: another's is not there)."""
        e = (
            self._entries.get(user.name, {}).get(name)
            if isinstance(name, str)
            else None
        )
        if e is None:
            raise errors.NotFound("unknown_file", f"no file {name!r} in your library")
        return self._public(user.name, name, e)

    def blob_path(self, user, name):
        """The bytes of `user`'s file `name` (a read-only file)."""
        return self._blob(self.get(user, name)["sha256"])

    def has(self, user_name, name):
        return name in self._entries.get(user_name, {})

    def used_bytes(self, user_name):
        """What the user's library takes: its files, and the parts of
        uploads interrupted or on their way."""
        return sum(e["size"] for e in self._entries.get(user_name, {}).values()) + sum(
            self._parts(user_name).values()
        )

    def partial(self, user, name):
        """How much of an interrupted upload of `name` arrived: ``{name, received}``."""
        names.input_name(name)
        p = self._partial_path(user.name, name)
        if (user.name, name) in self._uploading or not p.exists():
            raise errors.NotFound("no_upload", f"no interrupted upload of {name!r}")
        return {"name": name, "received": p.stat().st_size}

    # --- uploads ---------------------------------------------------------------

    async def begin(self, user, name, length, offset):
        """An upload of `length` bytes in all, from `offset` (a resume), or refused.

        Called from the headers, before any of the body is read. The name is
        taken at once (before the wait to hash a resumed part), so a second
        upload of it is refused, never written into the same part.

        Raises:
            errors.TooLarge: over the plan's file size or library quota (413)
            errors.Conflict: another upload of the name is on its way,
                `offset` is not what arrived before (its figure is said), a
                run uses the file it would replace, or too many uploads are
                interrupted
        """
        p = self._plan_of(user.name)
        path = self._admit(user, name, length)
        have = path.stat().st_size if path.exists() else 0
        if offset and offset != have:
            raise errors.Conflict(
                "upload_offset",
                f"{have} bytes of {name!r} arrived before, not {offset}: "
                f"resume with Upload-Offset: {have}",
            )
        if length > p.max_library_file_bytes:
            raise errors.TooLarge(
                "file_too_large",
                f"{length} bytes: the plan takes files of at most "
                f"{p.max_library_file_bytes} bytes",
            )
        room = self._room(user.name, name)
        if length > room:
            raise errors.TooLarge(
                "quota_exceeded",
                f"your library has room for {room} more bytes of the plan's "
                f"{p.max_library_bytes} (its files, and uploads kept or on "
                f"their way): {length} do not fit",
            )
        if not offset and have:
            path.unlink()
        u = self._uploading[(user.name, name)] = upload.Upload(
            self, user, name, path, offset, length, hashlib.sha256()
        )
        if offset:
            try:
                await asyncio.to_thread(upload.hash_file, path, u.sha)
            except BaseException:
                self.end(u)
                raise
        return u

    async def begin_copy(self, user, name):
        """An `Upload` of bytes whose size is not known yet (an output
        copied in): at most what the plan leaves room for."""
        p = self._plan_of(user.name)
        path = self._admit(user, name, 0)
        path.unlink(missing_ok=True)
        n = max(0, min(p.max_library_file_bytes, self._room(user.name, name)))
        u = upload.Upload(self, user, name, path, 0, n, hashlib.sha256(), exact=False)
        self._uploading[(user.name, name)] = u
        return u

    def _admit(self, user, name, length):
        """May `user` upload `name` now? Its part's path (its directory made)."""
        names.input_name(name)
        if (user.name, name) in self._uploading:
            raise errors.Conflict(
                "upload_in_progress", f"{name!r} is being uploaded already"
            )
        if name in self._entries.get(user.name, {}):
            self._refuse_in_use(user, name, "replaced")
        path = self._partial_path(user.name, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._expire_parts(user.name)
        kept = self._parts(user.name)
        if path.name not in kept and len(kept) >= MAX_PARTS:
            raise errors.Conflict(
                "too_many_uploads",
                f"{len(kept)} uploads are interrupted or on their way: finish "
                f"them (or wait {PART_SECS // 3600:.0f} h for them to expire)",
            )
        return path

    def _room(self, user_name, name):
        """Bytes the user's library may still take for `name`: the plan's
        less its other files, its other parts kept, and the whole declared
        size of its other uploads on their way."""
        p = self._plan_of(user_name)
        d = self._entries.get(user_name, {})
        used = sum(e["size"] for n, e in d.items() if n != name)
        mine = self._partial_path(user_name, name).name
        going = {
            u.path.name: u.length
            for (x, _), u in self._uploading.items()
            if x == user_name
        }
        for k, n in self._parts(user_name).items():
            if k != mine:
                used += max(n, going.get(k, 0))
        return max(0, p.max_library_bytes - used)

    def _parts(self, user_name):
        """The user's parts on disk (uploads interrupted or on their way): key -> bytes."""
        d = self.root / "partial" / user_name
        try:
            return {e.name: e.stat().st_size for e in os.scandir(d) if e.is_file()}
        except FileNotFoundError:
            return {}

    def _expire_parts(self, user_name):
        """Parts left longer than `PART_SECS`, and not on their way, go."""
        going = {u.path.name for (x, _), u in self._uploading.items() if x == user_name}
        t = time.time() - PART_SECS
        d = self.root / "partial" / user_name
        try:
            for e in os.scandir(d):
                if e.name not in going and e.stat().st_mtime < t:
                    _unlink(pathlib.Path(e.path))
        except FileNotFoundError:
            pass

    def end(self, upload, drop=False):
        """The upload's request is over (finished, refused or dropped).

        Args:
            drop (bool): what arrived is not kept for a resume
        """
        upload.suspend()
        if drop:
            upload.path.unlink(missing_ok=True)
        if self._uploading.get((upload.user.name, upload.name)) is upload:
            del self._uploading[(upload.user.name, upload.name)]

    async def commit(self, upload, sha256):
        b = self._blob(sha256)
        if b.exists():
            # the same bytes are there: stored once
            upload.path.unlink()
        else:
            b.parent.mkdir(exist_ok=True)
            os.chmod(upload.path, 0o444)
            os.replace(upload.path, b)
        e = {"sha256": sha256, "size": upload.length, "uploaded": time.time()}
        await self._put(upload.user.name, upload.name, e)
        return self._public(upload.user.name, upload.name, e)

    def items(self, sim, code):
        """The library files of a run of `sim`: ``[{name, sha256, size}]``
        (name: in the run directory), for an agent that fetches them."""
        res = []
        for p in code.params:
            v = sim.params.get(p["name"])
            e = self._entries.get(sim.user, {}).get(v) if p["type"] == "file" else None
            if e is not None:
                res.append(
                    {"name": p.get("as") or v, "sha256": e["sha256"], "size": e["size"]}
                )
        return res

    def read(self, sha256, offset, length):
        """`length` bytes of a blob at `offset` (blocking: use a thread)."""
        with open(self._blob(sha256), "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def stage(self, sim, code, user_root):
        """The library files of a run of `sim`, staged for its agent.

        Each is hard-linked (the same read-only inode, no copy) into
        ``<user_root>/.library/<sha256>``, under the user's run root that
        local and Docker agents see; the agent links it into the run
        directory under the name the code expects.

        Returns:
            dict: name in the run directory -> path relative to `user_root`
        """
        res = {}
        for p in code.params:
            v = sim.params.get(p["name"])
            e = self._entries.get(sim.user, {}).get(v) if p["type"] == "file" else None
            if e is None:
                continue
            t = user_root / STAGED / e["sha256"]
            try:
                t.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.link(self._blob(e["sha256"]), t)
            except FileExistsError:
                pass
            except OSError as x:
                # the agent says so as the run's error (not staged)
                pkdlog("{} file={} not staged error={}", sim.id, v, x)
            res[p.get("as") or v] = f"{STAGED}/{e['sha256']}"
        return res

    # --- changes ---------------------------------------------------------------

    async def rename(self, user, name, new):
        """`name` is `new` from now on: changed at once, then saved (two
        renames at once: the second finds the name gone, a 404)."""
        self.get(user, name)
        names.input_name(new)
        d = self._entries[user.name]
        if new in d or (user.name, new) in self._uploading:
            raise errors.Conflict("file_exists", f"there is a file {new!r} already")
        self._refuse_in_use(user, name, "renamed")
        e = d.pop(name)
        d[new] = e
        try:
            await self._store.save(self._key(user.name), d)
        except OSError:
            d.pop(new, None)
            d[name] = e
            raise
        return self._public(user.name, new, e)

    async def delete(self, user, name):
        self.get(user, name)
        self._refuse_in_use(user, name, "deleted")
        await self._drop(user.name, name)
        return {"deleted": name}

    def _users_of_file(self, user_name, name):
        """Ids of `user_name`'s simulations whose parameters name file
        `name`, and of those the ones whose run is queued or running."""
        return self._uses(user_name).get(name, ([], []))

    def _uses(self, user_name):
        """File name -> (`_users_of_file`) for all of a user's files, in one
        pass over the user's simulations."""
        res = {}
        for s in self._sims.for_user(user_name):
            c = self._catalog.codes.get(s.code)
            for p in c.params if c is not None else ():
                v = s.params.get(p["name"])
                if p["type"] != "file" or v is None:
                    continue
                used, active = res.setdefault(v, ([], []))
                if s.id not in used:
                    used.append(s.id)
                    if s.job.status in job.ACTIVE:
                        active.append(s.id)
        return res

    def _refuse_in_use(self, user, name, what):
        _, active = self._users_of_file(user.name, name)
        if active:
            raise errors.Conflict(
                "file_in_use",
                f"{name!r} cannot be {what} while a run of "
                f"{', '.join(sorted(active))} uses it",
            )

    async def _put(self, user_name, name, entry):
        d = self._entries.setdefault(user_name, {})
        old = d.get(name)
        d[name] = entry
        self._refs[entry["sha256"]] = self._refs.get(entry["sha256"], 0) + 1
        try:
            await self._store.save(self._key(user_name), d)
        except OSError:
            # not kept: as it was
            self._unref(entry["sha256"])
            if old is None:
                del d[name]
            else:
                d[name] = old
            raise
        if old is not None:
            self._unref(old["sha256"])

    async def _drop(self, user_name, name):
        d = self._entries[user_name]
        e = d.pop(name)
        await self._store.save(self._key(user_name), d)
        if not any(x["sha256"] == e["sha256"] for x in d.values()):
            # nothing of this user's names those bytes: gone from their runs'
            # view, and from the run directories of their runs that ended
            # (else bytes no quota counts: a link counts in the library)
            u = self._sims.run_root / user_name
            _unlink(u / STAGED / e["sha256"])
            dirs = [u / s.id for s in self._sims.for_user(user_name)]
            await asyncio.to_thread(_unlink_links, self._blob(e["sha256"]), dirs)
        self._unref(e["sha256"])

    def _unref(self, sha256):
        n = self._refs.get(sha256, 0) - 1
        if n > 0:
            self._refs[sha256] = n
            return
        self._refs.pop(sha256, None)
        _unlink(self._blob(sha256))

    def _public(self, user_name, name, e, used=None):
        if used is None:
            used, _ = self._users_of_file(user_name, name)
        return dict(
            name=name,
            size=e["size"],
            sha256=e["sha256"],
            uploaded=e["uploaded"],
            used_by=sorted(used),
        )

    def _blob(self, sha256):
        return self.root / "blobs" / sha256[:2] / sha256

    def _partial_path(self, user_name, name):
        k = hashlib.sha256(name.encode()).hexdigest()[:_KEY_CHARS]
        return self.root / "partial" / user_name / k

    def _key(self, user_name):
        return f"library/{user_name}.json"


def _unlink(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        pkdlog("file={} not removed error={}", path, e)


def _unlink_links(blob, dirs):
    """Remove the hard links of `blob` from the top of each of `dirs`."""
    try:
        b = os.stat(blob)
    except FileNotFoundError:
        return
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for x in it:
                    st = x.stat(follow_symlinks=False)
                    if (st.st_ino, st.st_dev) == (b.st_ino, b.st_dev):
                        _unlink(pathlib.Path(x.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
