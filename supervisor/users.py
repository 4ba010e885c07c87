"""Users, roles, plans and API tokens (stored only as hashes)."""

import hashlib
import os
import secrets
import time

from supervisor import errors, names, resources

ROLES = ("user", "admin")
PLANS = ("basic", "premium")


def hash_token(token):
    # tokens are 256 random bits, so a fast hash is enough to make a leak of
    # the store useless; no salt or stretching is needed
    return hashlib.sha256(token.encode()).hexdigest()


def new_token():
    return "sv_" + secrets.token_urlsafe(32)


class User:
    def __init__(self, doc):
        self.name = doc["name"]
        self.role = doc.get("role", "user")
        self.plan = doc.get("plan", "basic")
        self.token_hashes = list(doc.get("token_hashes", []))
        self.created = doc.get("created")
        # in every session cookie; bumped to end all sessions (revoke)
        self.session_gen = doc.get("session_gen", 0)

    def is_admin(self):
        return self.role == "admin"

    def to_dict(self):
        return {
            "name": self.name,
            "role": self.role,
            "plan": self.plan,
            "tokens": len(self.token_hashes),
            "created": self.created,
        }

    def to_doc(self):
        return dict(
            self.to_dict(), token_hashes=self.token_hashes, session_gen=self.session_gen
        )

    def session_value(self):
        """What the signed session cookie holds."""
        return f"{self.name}:{self.session_gen}"

    def pkdebug_str(self):
        return f"User({self.name})"


def build_plans(cfg):
    """The plans by name, from the configuration."""
    return {
        p: resources.Plan(
            p,
            cfg[f"{p}_max_running"],
            cfg[f"{p}_max_run_secs"],
            cfg[f"{p}_max_cores"],
            cfg.max_analyses,
            cfg[f"{p}_mem_bytes"],
            max_simulations=cfg[f"{p}_max_simulations"],
            max_event_sockets=cfg[f"{p}_max_event_sockets"],
            max_stored_bytes=cfg[f"{p}_max_stored_bytes"],
            max_run_memory_bytes=cfg[f"{p}_max_run_memory_bytes"],
            max_run_pids=cfg[f"{p}_max_run_pids"],
            max_library_bytes=cfg[f"{p}_max_library_bytes"],
            max_library_file_bytes=cfg[f"{p}_max_library_file_bytes"],
        )
        for p in PLANS
    }


class Users:
    """All users, loaded from and saved to the store."""

    def __init__(self, store, plans=None, drivers=()):
        """
        Args:
            plans (dict): name -> `resources.Plan` (the service's; not the CLI's)
            drivers (list): names of the drivers runs may use, the default first
        """
        self._store = store
        self._plans = plans or {}
        self._drivers = list(drivers)
        self._by_name = {}
        self._by_hash = {}
        for _, d in store.load_all("users"):
            self._index(User(d))

    def _index(self, user):
        self._by_name[user.name] = user
        for h in user.token_hashes:
            self._by_hash[h] = user

    def all(self):
        return sorted(self._by_name.values(), key=lambda u: u.name)

    def get(self, name):
        return self._by_name.get(name)

    def plan_of(self, name):
        """The `resources.Plan` of user `name` (basic for one who is gone)."""
        u = self._by_name.get(name)
        return self._plans[u.plan if u else "basic"]

    def whoami(self, user, stored_bytes=0, library_bytes=0):
        """The signed-in user, the limits of their plan, where runs may go.

        Args:
            stored_bytes (int): what the user stores now (`usage`)
            library_bytes (int): what their file library holds (`library`)
        """
        p = self._plans[user.plan]
        return {
            "user": user.to_dict(),
            "limits": {
                "max_cores": p.max_cores,
                "max_running": p.max_running,
                "max_run_secs": p.max_run_secs,
                "max_stored_bytes": p.max_stored_bytes,
                "stored_bytes": stored_bytes,
                "max_library_bytes": p.max_library_bytes,
                "max_library_file_bytes": p.max_library_file_bytes,
                "library_bytes": library_bytes,
            },
            # where runs may go: the first is the default
            "drivers": list(self._drivers),
            # what an admin may give a user, in display order
            "roles": list(ROLES),
            "plans": list(PLANS),
        }

    def by_token(self, token):
        if not token:
            return None
        return self._by_hash.get(hash_token(token))

    def by_session(self, value):
        """The user of a (verified) session cookie value, if still valid."""
        if not value:
            return None
        n, _, g = value.decode().partition(":")
        u = self._by_name.get(n)
        return u if u is not None and str(u.session_gen) == g else None

    def add(self, name, role="user", plan="basic"):
        """Create a user; returns (user, token, saved future)."""
        names.user_name(name)
        if name in self._by_name:
            raise errors.Conflict("user_exists", f"user {name} already exists")
        _check(role, plan)
        u = User({"name": name, "role": role, "plan": plan, "created": time.time()})
        t = self._new_token(u)
        return u, t, self._save(u)

    def update(self, user, role=None, plan=None, new_token=False, revoke_tokens=False):
        """Change a user; returns (token or None, saved future)."""
        _check(role or user.role, plan or user.plan)
        user.role = role or user.role
        user.plan = plan or user.plan
        if revoke_tokens:
            for h in user.token_hashes:
                self._by_hash.pop(h, None)
            user.token_hashes = []
            user.session_gen += 1
        t = self._new_token(user) if new_token else None
        return t, self._save(user)

    def _new_token(self, user):
        t = new_token()
        user.token_hashes.append(hash_token(t))
        self._index(user)
        return t

    async def first_admin(self, token_path):
        """The first start: user admin with a new token, written to `token_path`."""
        u = self.get("admin")
        if u is None:
            _, t, f = self.add("admin", role="admin")
        else:
            t, f = self.update(u, role="admin", new_token=True)
        await f
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as o:
            o.write(t + "\n")
        return token_path

    def _save(self, user):
        return self._store.save(f"users/{user.name}.json", user.to_doc())


def _check(role, plan):
    if role not in ROLES:
        raise errors.BadInput("bad_role", f"role must be one of {', '.join(ROLES)}")
    if plan not in PLANS:
        raise errors.BadInput("bad_plan", f"plan must be one of {', '.join(PLANS)}")
