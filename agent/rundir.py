"""Run directories on disk: paths kept inside the run root, a fresh directory per run.

Blocking file-system helpers shared by both pools (`agent.pool`,
`agent.slurm`) and the file ops (`agent.files`): `resolve_inside` keeps a
path from the supervisor inside the run root, `claim_dir` gives a run its
directory once no other run of it is still ending, `prepare_dir` makes it
fresh with the params and inputs, and `write_atomic` replaces a file durably.
"""

import asyncio
import errno
import json
import os
import shutil
import tempfile

from agent.run import LOG_FILE

#: written into the run directory before the code starts (see agent.codes)
PARAMS_FILE = "params.json"


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


async def claim_dir(run_root, run, runs):
    """Set ``run.dir`` once no other run of that directory is still dying.

    Args:
        runs (dict): the pool's records (a superseded run, or one dropped at
            welcome, may still be ending in the same directory)
    Returns:
        str: why the run cannot have it, or None
    """
    d = resolve_inside(run_root, run.run_dir)
    if d is None:
        return f"run_dir={run.run_dir!r} is not inside run_root"
    e = check_inputs(dict(run.inputs, **(run.op.get("links") or {})))
    if e:
        return e
    run.dir = d
    for o in list(runs.values()):
        if o is not run and o.run_dir == run.run_dir and not o.ended.done():
            await asyncio.shield(o.ended)
    return None


def check_inputs(inputs):
    """Why the input names cannot be files of a run directory, or None."""
    for n in inputs:
        if (
            not n
            or n in (".", "..", PARAMS_FILE, LOG_FILE)
            or "/" in n
            or "\0" in n
            or n != os.path.basename(n)
        ):
            return f"input name={n!r} is not a plain file name (or is reserved)"
    return None


def prepare_dir(
    path, params, inputs, links=None, run_root=None, code_uid=None, site_files=None
):
    """A fresh run directory: what a previous run left is removed.

    Args:
        links (dict): name -> a file staged under `run_root` (a library
            file, `supervisor.library`), linked in if the code cannot write
            it (it runs as `code_uid`, not root, and not as the file's
            owner), else copied; read-only either way
        site_files (dict): name -> absolute path of a file this host
            provides (the catalog's ``site``): a symlink to it
    Raises:
        OSError: a staged or site file is not there (its message says which)
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / PARAMS_FILE).write_text(
        json.dumps(params, indent=1) + "\n", encoding="utf-8"
    )
    for n, t in inputs.items():
        (path / n).write_text(t, encoding="utf-8")
    for n, rel in (links or {}).items():
        _stage(resolve_inside(run_root, rel), path / n, code_uid)
    for n, t in (site_files or {}).items():
        if not os.path.isfile(t):
            raise OSError(f"site file {n} is not at {t} on this host")
        os.symlink(t, path / n)


def _stage(src, dst, code_uid):
    try:
        st = os.stat(src) if src is not None else None
    except FileNotFoundError:
        st = None
    if st is None:
        raise OSError(f"library file {dst.name} is not staged on this host")
    if code_uid not in (0, None, st.st_uid) and not st.st_mode & 0o222:
        try:
            os.link(src, dst)
            return
        except OSError as e:
            # another mount (EXDEV), or not ours to link (EPERM: a
            # container's agent, under fs.protected_hardlinks)
            if e.errno not in (errno.EXDEV, errno.EPERM):
                raise
    if os.statvfs(src).f_flag & os.ST_RDONLY:
        # a read-only mount (a container's view of the library): the code
        # reads through the link and can change nothing
        os.symlink(src, dst)
        return
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o444)


def write_atomic(path, content):
    """Replace `path` with `content`, atomically and durably.

    A temporary file in the same directory is written and fsynced, renamed
    over `path`, and the directory is fsynced, so after a crash the file is
    either the old one or the new one, and the new one stays.

    Args:
        path (pathlib.Path): the file (its directory exists)
        content (bytes): all of it
    """
    fd, t = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(t, path)
    except BaseException:
        try:
            os.unlink(t)
        except OSError:
            pass
        raise
    d = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(d)
    finally:
        os.close(d)
