"""Fuzzing: schemathesis against a real supervisor, from its own document.

Every operation of ``/api/openapi.json`` is fuzzed three times: with an
admin's token, with a basic-plan user's token and with no credentials. A
case fails on a 5xx, a status the document does not list for the operation,
or a body (or media type) that breaks its documented schema; 4xx replies to
bad input are expected and must be the documented ``Error``.

Bounded for CI: a fixed number of examples per operation, derandomized, no
example database (hypothesis keeps only caches, in the ignored .hypothesis/). Runs are bounded too: the
catalog has only the real codes (no test codes that fill disks or fork) and
every plan's max run time is a few seconds; the ``server`` fixture kills
what is left at teardown and fails if anything survives.

The fuzzer's users are not the fixture's ``admin``: ``fuzz-admin`` and
``fuzz-user``. Fuzzing ``PATCH /api/admin/users/{user}`` as an admin may
demote or revoke any of them (the schema's enums put ``admin`` and ``user``
within easy reach), so after each such case `Fuzzer.restore` puts the three
users back, each repaired with the token of an admin that still works.
"""

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

#: generated cases per operation and identity (fuzzing phase)
MAX_EXAMPLES = 20

#: who calls: the name of a user of `Fuzzer`, or None (no credentials)
IDENTITIES = {"admin": "fuzz-admin", "user": "fuzz-user", "anonymous": None}

#: the users the test needs and what they must stay: name -> (role, plan)
KEEP = {
    "admin": ("admin", "basic"),
    "fuzz-admin": ("admin", "basic"),
    "fuzz-user": ("user", "basic"),
}

#: what fails a case (schemathesis' own `ignored_auth` and friends re-send
#: requests; credentials are covered by `IDENTITIES` instead)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]

#: schemathesis' configuration, in full (no schemathesis.toml is read)
CONFIG = {"seed": 20240611, "generation": {"deterministic": True, "database": "none"}}

#: Hypothesis' settings of each operation's run: reproducible, no example
#: database (nothing written to the tree), no wall-clock deadline
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=set(hypothesis.Phase) - {hypothesis.Phase.explain},
)

#: short runs, whatever the fuzzer asks for
SERVER_CFG = {"basic_max_run_secs": 3, "premium_max_run_secs": 3}

#: the heat run each user owns, so that lookups find something
SEED_SIM = {"steps": 50, "nx": 11}


class Fuzzer:
    """The users the fuzzer calls as, their simulations, and repair."""

    def __init__(self, server):
        self.server = server
        for n in ("fuzz-admin", "fuzz-user"):
            server.add_user(n, plan=KEEP[n][1], role=KEEP[n][0])
        self.known = {}
        for n in ("fuzz-admin", "fuzz-user"):
            s = server.create(n, "heat", **SEED_SIM)
            server.run(n, s["id"])
            server.wait_status(n, s["id"], "completed")
            f = server.api("GET", f"/simulations/{s['id']}/files", n, expect=200)
            self.known[n] = {
                "id": s["id"],
                "path": f.json()["files"][0]["path"],
                "user": "fuzz-user",
                "host": server.api("GET", "/admin/hosts", expect=200).json()[0]["name"],
                "agent_id": next(
                    a["id"]
                    for a in server.api("GET", "/admin/agents", expect=200).json()
                    if a["user"] == n
                ),
            }

    def headers(self, identity):
        n = IDENTITIES[identity]
        return {"Authorization": "Bearer " + self.server.tokens[n]} if n else {}

    def path_parameters(self, identity, operation):
        """Values of `operation`'s path parameters that name real objects.

        `identity`'s own simulation, its files and agent, the fuzz user
        (no credentials: the fuzz user's). None if there is none to name, or
        the operation deletes (the rest would find nothing after it).
        """
        if operation.method.upper() == "DELETE":
            return None
        k = self.known[IDENTITIES[identity] or "fuzz-user"]
        n = [p.name for p in operation.path_parameters]
        if not n or not set(n) <= set(k):
            return None
        return {x: k[x] for x in n}

    def restore(self):
        """Give each of `KEEP` its role and plan back, and a working token."""
        broken = [n for n in KEEP if not self._intact(n)]
        for n in broken:
            fixer = next(a for a in KEEP if a not in broken and KEEP[a][0] == "admin")
            r = self.server.api(
                "PATCH",
                f"/admin/users/{n}",
                fixer,
                json={"role": KEEP[n][0], "plan": KEEP[n][1], "new_token": True},
                expect=200,
            )
            self.server.tokens[n] = r.json()["token"]
        assert all(self._intact(n) for n in KEEP)

    def _intact(self, name):
        r = self.server.api("GET", "/whoami", name)
        if r.status_code != 200:
            return False
        u = r.json()["user"]
        return (u["role"], u["plan"]) == KEEP[name]


@pytest.fixture
def fuzzer(server_factory):
    f = Fuzzer(server_factory(test_codes=False, **SERVER_CFG))
    yield f
    # the fixture's cleanup needs the admin's token
    f.restore()


@pytest.mark.timeout(100)
@pytest.mark.parametrize("identity", tuple(IDENTITIES))
def test_fuzz(fuzzer, identity, subtests):
    s = schemathesis.openapi.from_url(
        fuzzer.server.url + "/api/openapi.json",
        config=schemathesis.Config.from_dict(CONFIG),
        timeout=10,
    )
    ops = [r.ok() for r in s.get_all_operations()]
    assert len(ops) == sum(len(m) for m in s.raw_schema["paths"].values())
    for o in ops:
        with subtests.test(o.label):
            _fuzz(fuzzer, identity, o)


def _fuzz(fuzzer, identity, operation):
    """One operation's cases, positive and negative; raises what fails."""
    c = [operation.as_strategy(m) for m in GenerationMode]
    p = fuzzer.path_parameters(identity, operation)
    if p:
        c.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=p))

    @SETTINGS
    @hypothesis.given(case=st.one_of(c))
    def _run(case):
        r = case.call(headers=fuzzer.headers(identity), timeout=10)
        try:
            case.validate_response(r, checks=CHECKS)
        finally:
            if operation.path == "/api/admin/users/{user}":
                fuzzer.restore()

    _run()
