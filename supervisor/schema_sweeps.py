"""The API's types of sweeps (`sweeps`): requests and responses, as in `schema`."""

import typing

import msgspec
from msgspec import UNSET, UnsetType

from supervisor.schema import Status, _Body, _Doc

#: a member's status: its job's, or ``pending`` (not yet handed to the
#: dispatch: the sweep's limit), or ``deleted`` (its simulation was deleted)
MemberStatus = typing.Union[Status, typing.Literal["pending", "deleted"]]


class SweepCreate(_Body):
    code: str
    axes: dict[str, typing.Any]
    params: dict[str, typing.Any] | UnsetType = UNSET
    combine: typing.Literal["grid", "zip"] | UnsetType = UNSET
    name: str | UnsetType = UNSET
    cores: int | UnsetType | None = UNSET
    driver: str | UnsetType | None = UNSET
    max_parallel: typing.Annotated[int, msgspec.Meta(ge=1)] | UnsetType | None = UNSET


class SweepAxis(_Doc):
    name: str
    values: list[typing.Any]


class SweepResultField(_Doc):
    """A result the code reports at the end of each run (the catalog's)."""

    name: str
    label: str | None = None
    unit: str | None = None


class _SweepFields(_Doc):
    id: str
    user: str
    name: str
    code: str
    params: dict[str, typing.Any]
    axes: list[SweepAxis]
    combine: str
    cores: int
    driver: str
    max_parallel: int | None
    created: float
    #: when it last changed (a summary older than one seen is stale)
    updated: float
    #: members in all, by status, and done (ended) out of them
    size: int
    counts: dict[str, int]
    done: int
    progress: float
    #: ``running`` while a member is active or pending, ``canceled`` once a
    #: cancel ended it, else ``done``
    status: typing.Literal["running", "canceled", "done"]
    result_fields: list[SweepResultField]


class Sweep(_SweepFields):
    """A sweep as listed: ``members`` is how many it has."""

    members: int


class SweepMember(_Doc):
    index: int
    simulation: str
    #: the swept parameters' values (the rest are the sweep's ``params``)
    params: dict[str, typing.Any]
    status: MemberStatus
    result: dict[str, float | None] | None = None
    error: str | None = None


class SweepDetail(_SweepFields):
    """One sweep: ``members`` are its members, in order."""

    members: list[SweepMember]


class SweepDeleted(_Doc):
    deleted: str
    simulations: int


class SweepRetried(Sweep):
    retried: int


#: the types `openapi` describes, with `schema.TYPES`
TYPES = (
    SweepCreate,
    SweepAxis,
    SweepResultField,
    Sweep,
    SweepMember,
    SweepDetail,
    SweepDeleted,
    SweepRetried,
)
