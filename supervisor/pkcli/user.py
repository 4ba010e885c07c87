"""supervisor user add|list: manage users in a data directory's store.

Works on the store directly, so it is for when the service is stopped or for
the first admin; with the service running use the admin API (the service
does not see changes made behind its back until it restarts).
"""

import asyncio

import argh

# the commands' arguments with their help for ``-h`` (argh reads no Args: of
# docstrings; it shows each default after the help, ``-`` for None)
_DATA_DIR = argh.arg(
    "--data-dir", help="data directory; if not given, the configured one"
)


@argh.arg("name", help="user name")
@argh.arg("--admin", help="give the admin role")
@argh.arg("--plan", help="basic or premium")
@_DATA_DIR
def add(name, admin=False, plan="basic", data_dir=None):
    """Create a user and print its new API token (shown only this once)."""

    from pykern import pkcli

    from supervisor import errors

    async def _add():
        s, u = _open(data_dir)
        try:
            _, t, f = u.add(name, role="admin" if admin else "user", plan=plan)
            await f
            return t
        except errors.Error as e:
            pkcli.command_error("{}", e.message)
        finally:
            s.destroy()

    return asyncio.run(_add())


@_DATA_DIR
def list(data_dir=None):
    """List users: name, role, plan."""
    s, u = _open(data_dir)
    s.destroy()
    return "\n".join(f"{x.name}\t{x.role}\t{x.plan}" for x in u.all())


def _open(data_dir):
    from supervisor import config, store, users

    s = store.Store(config.load(data_dir=data_dir).data_dir)
    return s, users.Users(s)
