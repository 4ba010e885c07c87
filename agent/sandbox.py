"""The sandbox of local runs: each code runs under bubblewrap (``bwrap``).

What a sandboxed code sees: the system (``/usr`` and the ``/bin``, ``/lib*``
links, a few files of ``/etc``) and the agent's Python (its prefixes and the
`agent` package) read-only; its own run directory writable, at the same
path; a private ``/tmp``, ``/proc`` and ``/dev``. Nothing else of the host:
not the data directory, not other run directories, not ``/root`` or
``/home``, not the rest of the checkout. It gets its own network (loopback
only, nothing listens there), ipc, pid, uts and cgroup namespaces.

As root, bwrap needs no user namespace; the code is switched to an
unprivileged uid (`DEFAULT_UID`) with ``setpriv`` inside the sandbox, and
its run directory is chowned to it. As another user, bwrap uses an
unprivileged user namespace (the host must allow them) and the code keeps
that uid. Memory and CPU are not limited here (see `agent.limits`).

The pool's process group holds ``bwrap`` and the code alike, so cancels and
timeouts still signal the code: bwrap itself ignores SIGTERM (``env
--ignore-signal``) and the code gets the default back, so a code has its
grace before the SIGKILL; a SIGKILL of bwrap takes its whole pid namespace
down. ``--new-session`` is not used: the pool already gives the code its own
session without a terminal, and a new session would take the code out of
the group the pool kills.

`Bare` is the pool's default (no sandbox); `Broken` refuses every run with
the reason the sandbox does not work.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import agent
from agent.run import LOG_FILE

#: uid (and gid) of sandboxed codes when the agent runs as root
DEFAULT_UID = 10001

#: size of the private /tmp (memory backed)
TMP_BYTES = 512 * 1024 * 1024

#: how long the start-up check may take
CHECK_TIMEOUT_SECS = 20.0

#: system trees bound read-only, or recreated as the links they are
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: what of /etc a code may need (libraries, names, time zone, certificates,
#: alternatives such as mpirun); no secrets (shadow, ssh keys) and nothing
#: of the host's services
_ETC = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "group",
    "host.conf",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "openmpi",
    "passwd",
    "ssl",
    "timezone",
)


class Bare:
    """No sandbox: the code's own argv, environment and exit code."""

    def command(self, run):
        """The argv to execute for `run` (its directory is prepared)."""
        return run.command()

    def environ(self, env):
        """The environment of the code, given the pool's clean one."""
        return env

    def worker_command(self, cwd, argv):
        """The argv of a process of ours (the analysis worker) working in `cwd`."""
        return argv

    def exit_code(self, rc):
        """The code's exit code (negative: killed by that signal)."""
        return rc

    def code_uid(self):
        """The uid its codes run as."""
        return os.geteuid()


class Broken(Bare):
    """The sandbox was asked for and does not work: every run fails with `reason`."""

    def __init__(self, reason):
        self.reason = reason

    def command(self, run):
        # the pool reports an OSError at spawn as the run's error
        raise OSError(f"the sandbox is on and does not work: {self.reason}")

    def worker_command(self, cwd, argv):
        raise OSError(f"the sandbox is on and does not work: {self.reason}")


class Sandbox(Bare):
    """Runs each code under bwrap (see the module doc).

    Args:
        uid (int): the code's uid and gid if we are root
        bwrap (str): the bwrap program
    """

    def __init__(self, uid=DEFAULT_UID, bwrap="bwrap"):
        self.is_root = os.geteuid() == 0
        self.uid = uid
        self.bwrap = shutil.which(bwrap) or bwrap
        self._agent_dir = os.path.dirname(os.path.realpath(agent.__file__))
        p = _python_prefixes()
        self._python_path = None
        if not any(_is_inside(self._agent_dir, x) for x in p):
            # a checkout (editable install): only the package, not its siblings
            p.append(self._agent_dir)
            self._python_path = os.path.dirname(self._agent_dir)
        self._ro = p

    def argv(self, run_dir, argv, files=()):
        """The full command line that runs `argv` in the sandbox, in `run_dir`.

        Args:
            run_dir (str or Path): absolute; the only writable host directory
            argv (list): the code's command (its program on a path the
                sandbox shows: the system or the agent's Python)
            files (iterable): absolute paths of files shown read-only at
                their place (the site files its run directory links to)
        Returns:
            list: ``env``, ``bwrap`` and its options, (``setpriv``,) ``env``, argv
        """
        d = os.path.realpath(run_dir)
        rv = [
            "/usr/bin/env",
            "--ignore-signal=TERM",
            self.bwrap,
            *self._namespaces(),
            "--die-with-parent",
        ]
        for p in _SYSTEM:
            if os.path.islink(p):
                rv += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                rv += ["--ro-bind", p, p]
        rv += ["--perms", "0755", "--dir", "/etc"]
        for n in _ETC:
            p = os.path.join("/etc", n)
            if os.path.lexists(p):
                rv += ["--ro-bind", p, p]
        rv += ["--proc", "/proc", "--dev", "/dev"]
        rv += ["--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
        made = {"/", "/tmp", "/etc", "/proc", "/dev", *_SYSTEM}
        binds = []
        for p in self._ro:
            rv += [*_parents(p, made, binds), "--ro-bind", p, p]
            binds.append(p)
        for p in files:
            if not any(_is_inside(p, x) for x in (*_SYSTEM, *binds)):
                rv += [*_parents(p, made, binds), "--ro-bind", os.path.realpath(p), p]
        for link, target in _links(argv[0], [*binds, "/usr"]):
            if link in made:
                # a system link already made (/bin on merged-/usr Debian)
                continue
            rv += [*_parents(link, made, binds), "--symlink", target, link]
            made.add(link)
        rv += [*_parents(d, made, binds), "--bind", d, d, "--chdir", d, "--"]
        if self.is_root:
            rv += [
                "/usr/bin/setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.uid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        return [*rv, "/usr/bin/env", "--default-signal=TERM", "--", *argv]

    def worker_command(self, cwd, argv):
        # `cwd` (the user's run directories) is all it sees of the host's files
        return self.argv(cwd, argv)

    def command(self, run):
        """`argv` of the run's command; as root, the run directory becomes the code's."""
        if self.is_root:
            # never the library files linked in: they stay read-only, root's
            _chown_dir(run.dir, self.uid, set(run.op.get("links") or ()))
        return self.argv(
            run.dir, run.command(), (run.op.get("site_files") or {}).values()
        )

    def code_uid(self):
        return self.uid if self.is_root else os.geteuid()

    def environ(self, env):
        rv = dict(env, HOME="/tmp", TMPDIR="/tmp", PYTHONDONTWRITEBYTECODE="1")
        if self._python_path:
            rv["PYTHONPATH"] = self._python_path
        return rv

    def exit_code(self, rc):
        # bwrap reports a code killed by signal N as 128 + N
        if rc is not None and 128 < rc < 128 + 65:
            return 128 - rc
        return rc

    def check(self):
        """Run a code's start in the sandbox once.

        Returns:
            str: why the sandbox does not work here, or None if it does
        """
        if not shutil.which(self.bwrap):
            return f"{self.bwrap} is not installed (Debian package bubblewrap)"
        for p in ("/usr/bin/env",) + (("/usr/bin/setpriv",) if self.is_root else ()):
            if not os.access(p, os.X_OK):
                return f"{p} is missing"
        with tempfile.TemporaryDirectory(prefix="simvisor-sandbox-check-") as d:
            if self.is_root:
                _chown_dir(d, self.uid)
            a = self.argv(
                d,
                [
                    sys.executable,
                    "-c",
                    "import agent.codes; open('check', 'w').write('ok')",
                ],
            )
            try:
                p = subprocess.run(
                    a,
                    cwd=d,
                    env=self.environ({"PATH": os.defpath}),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=CHECK_TIMEOUT_SECS,
                )
            except (OSError, subprocess.SubprocessError) as e:
                return f"cannot run {self.bwrap}: {e}"
            if p.returncode != 0 or not os.path.exists(os.path.join(d, "check")):
                e = p.stderr.decode(errors="replace").strip()[-1000:]
                return f"{self.bwrap} failed (exit code {p.returncode}): {e}"
        return None

    def _namespaces(self):
        if self.is_root:
            # no user namespace: setpriv needs a real uid to switch to
            return [
                "--unshare-ipc",
                "--unshare-pid",
                "--unshare-net",
                "--unshare-uts",
                "--unshare-cgroup-try",
            ]
        return ["--unshare-all", "--unshare-user", "--disable-userns"]


def for_agent(enabled, uid=DEFAULT_UID):
    """The agent's sandbox: `Bare` if not `enabled`, else a working `Sandbox` or `Broken`.

    Blocking (runs the check): call before the event loop starts.
    """
    if not enabled:
        return Bare()
    s = Sandbox(uid=uid)
    e = s.check()
    return Broken(e) if e else s


def _chown_dir(path, uid, keep=()):
    """The directory and what is directly in it (params, inputs) become `uid`'s.

    Not the log: the agent writes it, the code only reads it; nor `keep`.
    """
    os.chown(path, uid, uid)
    with os.scandir(path) as it:
        for e in it:
            if e.name != LOG_FILE and e.name not in keep and not e.is_symlink():
                os.chown(e.path, uid, uid)


def _is_inside(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def _links(path, binds):
    """(link, target) of the symlinks on the way to `path` outside `binds`.

    The code's program is named as the agent names it (a venv reached
    through a symlinked directory, say); the sandbox recreates those links.
    """
    rv = []
    cur = "/"
    todo = [x for x in os.path.abspath(path).split("/") if x]
    n = 0
    while todo and n < 40:
        p = os.path.join(cur, todo.pop(0))
        if os.path.islink(p) and not any(_is_inside(p, b) for b in binds):
            n += 1
            t = os.readlink(p)
            rv.append((p, t))
            todo = [x for x in t.split("/") if x] + todo
            if t.startswith("/"):
                cur = "/"
            continue
        cur = p
    return rv


def _parents(path, made, binds):
    """``--dir`` options for the missing parents of `path` (mode 0755, so any uid passes).

    As root, bwrap would make them 0700 and the code's uid could not pass.
    """
    rv = []
    p = os.path.dirname(path)
    todo = []
    while p not in made and p != "/" and not any(_is_inside(p, b) for b in binds):
        todo.append(p)
        p = os.path.dirname(p)
    for p in reversed(todo):
        rv += ["--perms", "0755", "--dir", p]
        made.add(p)
    return rv


def _python_prefixes():
    """The interpreter's prefixes (venv and base), resolved, outermost only."""
    rv = []
    for p in sorted(
        {
            os.path.realpath(x)
            for x in (
                sys.prefix,
                sys.exec_prefix,
                sys.base_prefix,
                sys.base_exec_prefix,
                os.path.dirname(os.path.realpath(sys.executable)),
            )
        }
    ):
        if not any(_is_inside(p, x) for x in rv) and not _is_inside(p, "/usr"):
            rv.append(p)
    return rv
