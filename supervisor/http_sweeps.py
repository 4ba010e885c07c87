"""The sweeps' HTTP API (`sweeps`): create, list, one with its members, cancel, retry, delete.

``GET /api/sweeps/{id}/results.csv`` is the members' table as CSV: index,
simulation, status, the swept parameters, then the code's results.
"""

import csv
import io
import re

from supervisor import errors, schema, schema_sweeps
from supervisor.http_base import Base
from supervisor.openapi import Op, action, ops

_MEMBERS_RE = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*", re.ASCII)


class SweepList(Base):
    api = ops(
        get=Op("your sweeps", [schema_sweeps.Sweep]),
        post=Op(
            "create a sweep: one run of the code per member of the axes",
            schema_sweeps.Sweep,
            202,
            request=schema_sweeps.SweepCreate,
        ),
    )

    def get(self):
        self.reply(self.sv.sweeps.list(self.require_user()))

    async def post(self):
        u = self.require_user()
        b = self.body(schema_sweeps.SweepCreate)
        self.reply(await self.sv.sweeps.create(u, b), 202)


class Sweep(Base):
    api = ops(
        get=Op(
            "one sweep, with its members in order",
            schema_sweeps.SweepDetail,
            lookup=True,
        ),
        delete=action(
            "cancel it, delete it and its members' simulations",
            schema_sweeps.SweepDeleted,
            lookup=True,
        ),
    )

    def get(self, sweep_id):
        self.reply(self.sv.sweeps.detail(self.require_user(), sweep_id))

    async def delete(self, sweep_id):
        u = self.require_user()
        self.sv.sweeps.get(u, sweep_id)
        self.body(schema.NoBody)
        self.reply(await self.sv.sweeps.delete(u, sweep_id))


class SweepCancel(Base):
    api = ops(
        post=action(
            "cancel every member, or those named (those running confirmed gone)",
            schema_sweeps.Sweep,
            lookup=True,
            query=(
                (
                    "members",
                    {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"},
                    "only these members (indices, e.g. 0,3,7); the others go on",
                ),
            ),
        )
    )

    async def post(self, sweep_id):
        u = self.require_user()
        self.sv.sweeps.get(u, sweep_id)
        m = _members_arg(self)
        self.body(schema.NoBody)
        self.reply(await self.sv.sweeps.cancel(u, sweep_id, m))


class SweepRetry(Base):
    api = ops(
        post=action(
            "run the failed members again (error, timed out, canceled)",
            schema_sweeps.SweepRetried,
            lookup=True,
        )
    )

    async def post(self, sweep_id):
        u = self.require_user()
        self.sv.sweeps.get(u, sweep_id)
        self.body(schema.NoBody)
        self.reply(await self.sv.sweeps.retry(u, sweep_id))


class SweepCsv(Base):
    api = ops(
        get=Op(
            "the members' parameters, statuses and results as CSV",
            content="text/csv",
            lookup=True,
        )
    )

    def get(self, sweep_id):
        d = self.sv.sweeps.detail(self.require_user(), sweep_id)
        names = [a["name"] for a in d["axes"]]
        results = [r["name"] for r in d["result_fields"]]
        b = io.StringIO()
        w = csv.writer(b, lineterminator="\n")
        w.writerow(["index", "simulation", "status", *names, *results, "error"])
        for m in d["members"]:
            r = m["result"] or {}
            w.writerow(
                [
                    m["index"],
                    m["simulation"],
                    m["status"],
                    *(_cell(m["params"].get(k)) for k in names),
                    *(_cell(r.get(k)) for k in results),
                    _cell(m["error"]),
                ]
            )
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header(
            "Content-Disposition", f'attachment; filename="sweep-{d["id"]}.csv"'
        )
        self.finish(b.getvalue())


def _members_arg(handler):
    """The ``members`` query argument: a list of indices, or None if not given."""
    a = handler.get_query_arguments("members", strip=False)
    if not a:
        return None
    if len(a) > 1 or not _MEMBERS_RE.fullmatch(a[0]):
        raise errors.BadInput(
            "bad_argument", "members must be indices once, e.g. members=0,3,7"
        )
    return [int(x) for x in a[0].split(",")]


def _cell(v):
    # a spreadsheet runs a cell that starts with = + - @ as a formula
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@"):
        return "'" + v
    return "" if v is None else v


#: the routes of this module, for `http.ROUTES`
ROUTES = (
    ("/api/sweeps", SweepList),
    ("/api/sweeps/{id}/results.csv", SweepCsv),
    ("/api/sweeps/{id}/cancel", SweepCancel),
    ("/api/sweeps/{id}/retry", SweepRetry),
    ("/api/sweeps/{id}", Sweep),
)
