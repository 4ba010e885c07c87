"""The API's types: one schema per request and response body.

Request bodies are decoded strictly (`decode`): JSON of at most a few levels
of nesting, an object, no unknown fields (all named in the error), every
field of its declared type (``"false"`` is not a boolean, ``"2"`` not an
integer). Response bodies are declared here too; `openapi` publishes both
as JSON Schema, generated from these classes, never written by hand.

Fields that a request may leave out are `UNSET`; `decode` returns only
the fields that were sent, as a dict.
"""

import re
import typing

import msgspec
from msgspec import UNSET, UnsetType

from agent import protocol
from supervisor import errors

#: nesting a request body may have (params are flat; {} inside [] inside {})
MAX_DEPTH = 8

Status = typing.Literal[
    "missing",
    "queued",
    "starting",
    "running",
    "completed",
    "error",
    "canceled",
    "timed_out",
    "lost",
]
Role = typing.Literal["user", "admin"]
Plan = typing.Literal["basic", "premium"]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A request body: unknown fields are refused."""


class _Doc(msgspec.Struct, kw_only=True):
    """A response body (servers may add fields; clients ignore what they do not know)."""


# --- requests ------------------------------------------------------------------


class NoBody(_Body):
    """The body of an action that takes none: empty, or ``{}``."""


class Login(_Body):
    token: str


class SimCreate(_Body):
    code: str
    name: str | UnsetType = UNSET
    params: dict[str, typing.Any] | UnsetType = UNSET


class SimPatch(_Body):
    name: str | UnsetType = UNSET
    params: dict[str, typing.Any] | UnsetType = UNSET


class RunRequest(_Body):
    cores: int | UnsetType | None = UNSET
    driver: str | UnsetType | None = UNSET


class Drain(_Body):
    drain: bool = True


class UserCreate(_Body):
    name: str
    role: Role = "user"
    plan: Plan = "basic"


class UserPatch(_Body):
    role: Role | UnsetType = UNSET
    plan: Plan | UnsetType = UNSET
    new_token: bool = False
    revoke_tokens: bool = False


class SignInRequest(_Body):
    host: str
    user: str
    password: str
    otp: str | UnsetType | None = UNSET


class Empty(_Body):
    """No fields (cancel, logout)."""


# --- responses -----------------------------------------------------------------


class Error(_Doc):
    error: str
    message: str


class Health(_Doc):
    ok: bool
    version: str
    #: part -> why it is not well (``store``: writes failing), if any
    degraded: dict[str, str] | UnsetType = UNSET


class User(_Doc):
    name: str
    role: Role
    plan: Plan
    tokens: int
    created: float | None


class NewUser(User):
    token: str


class UserMaybeToken(User):
    token: str | UnsetType = UNSET


class Limits(_Doc):
    max_cores: int
    max_running: int
    max_run_secs: float
    max_stored_bytes: int
    #: what the user stores now, counted against max_stored_bytes
    stored_bytes: int
    #: the file library: what it may hold, one file's most, what it holds
    max_library_bytes: int
    max_library_file_bytes: int
    library_bytes: int


class Whoami(_Doc):
    user: User
    limits: Limits
    drivers: list[str]
    roles: list[Role]
    plans: list[Plan]
    xsrf: str


class ResultField(_Doc):
    """One number a code's runs report at their end (`supervisor.adapter.check_result`)."""

    name: str
    label: str
    unit: str | UnsetType = UNSET


class Code(_Doc):
    name: str
    title: str
    kind: typing.Literal["run", "analysis"]
    params: list[dict[str, typing.Any]]
    max_cores: int
    #: its runs make frames (a plot card)
    frames: bool
    #: what the GUI draws of them (`supervisor.adapter.check_plots`)
    plots: list[dict[str, typing.Any]]
    #: what its runs report at their end (the job's ``result``), if anything
    result: list[ResultField] | UnsetType = UNSET


class Batch(_Doc):
    job_id: str
    state: str
    reason: str


class Run(_Doc):
    """One past run in a job's history."""

    run_id: str | None
    status: Status
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    cores: int
    driver: str | None
    host: str | None
    exit_code: int | None
    error: str | None
    #: what it reported at its end (absent in runs stored before results)
    result: dict[str, float | None] | UnsetType | None = UNSET


class Wait(_Doc):
    """Why a run waits; more fields by reason (host, cores, position, ...)."""

    reason: str


class Job(_Doc):
    status: Status
    run_id: str | None
    situation: str
    wait: Wait | None
    canceling: bool
    queue_position: int | None
    batch: Batch | None
    progress: float
    cores: int
    driver: str | None
    host: str | None
    kind: str
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    error: str | None
    #: what the run reported at its end: the code's declared result, by name
    #: (None: no value); None if it declares none or it did not end so
    result: dict[str, float | None] | None
    frames: int
    history: list[Run]


class SweepRef(_Doc):
    """The sweep a simulation is a member of: its id, and the member's index."""

    id: str
    index: int


class Simulation(_Doc):
    id: str
    user: str
    code: str
    name: str
    params: dict[str, typing.Any]
    created: float
    updated: float
    job: Job
    sweep: SweepRef | None = None


class AdminJob(_Doc):
    """An active job as admins see it (no history)."""

    status: Status
    run_id: str | None
    situation: str
    wait: Wait | None
    canceling: bool
    user: str
    simulation: str
    name: str
    code: str
    agent: str | None
    driver: str | None
    host: str | None
    cores: int
    queued_at: float | None


class Frames(_Doc):
    frames: list[dict[str, typing.Any]]
    next: int
    run_id: str | None


class File(_Doc):
    path: str
    size: int
    mtime: float


class FileList(_Doc):
    files: list[File]
    inputs: list[str]


class Uploaded(_Doc):
    name: str
    size: int


class Deleted(_Doc):
    deleted: str


_NonEmpty = typing.Annotated[str, msgspec.Meta(min_length=1)]


class LibraryRename(_Body):
    name: _NonEmpty


class LibrarySave(_Body):
    """An output file of a simulation's run, copied into the library."""

    name: _NonEmpty
    simulation: _NonEmpty
    path: _NonEmpty


class LibraryFile(_Doc):
    name: str
    size: int
    sha256: str
    #: when its bytes arrived (seconds since the epoch)
    uploaded: float
    #: the caller's simulations whose parameters name it
    used_by: list[str]


class UploadState(_Doc):
    """An interrupted upload: how many bytes arrived (resume from there)."""

    name: str
    received: int


class Killed(_Doc):
    killed: str


class Agent(_Doc):
    id: str
    user: str
    driver: str
    host: str
    state: typing.Literal["starting", "connected", "disconnected", "stopped"]
    connected_since: float | None
    last_message_at: float | None
    runs: list[str]
    pid: int | None
    container_id: str | None


class Host(_Doc):
    name: str
    cores: int
    cores_used: int
    cores_free: int
    draining: bool


class Container(_Doc):
    host: str
    id: str | UnsetType = UNSET
    user: str | UnsetType | None = UNSET
    agent: str | UnsetType | None = UNSET
    state: str | UnsetType = UNSET
    error: str | UnsetType = UNSET


class LoginHost(_Doc):
    name: str
    address: str
    otp: typing.Literal["none", "append", "prompt"]
    signed_in: bool
    waiting: int


class LoginHosts(_Doc):
    hosts: list[LoginHost]


class SignedIn(_Doc):
    host: str
    signed_in: bool
    agent: Agent


class Ok(_Doc):
    ok: bool


#: every type the document describes, requests first
TYPES = (
    NoBody,
    Login,
    SimCreate,
    SimPatch,
    RunRequest,
    Drain,
    UserCreate,
    UserPatch,
    SignInRequest,
    LibraryRename,
    LibrarySave,
    Empty,
    Error,
    Health,
    User,
    NewUser,
    UserMaybeToken,
    Limits,
    Whoami,
    ResultField,
    Code,
    Batch,
    Run,
    Wait,
    Job,
    SweepRef,
    Simulation,
    AdminJob,
    Frames,
    File,
    FileList,
    Uploaded,
    Deleted,
    Killed,
    Agent,
    Host,
    Container,
    LoginHost,
    LoginHosts,
    SignedIn,
    Ok,
    LibraryFile,
    UploadState,
)

# --- decoding ------------------------------------------------------------------

_FIELD_RE = re.compile(r"at `\$\.(\w+)|required field `(\w+)`")


def decode(body, type_):
    """Check a request body against `type_`; the fields sent, as a dict.

    Args:
        body (bytes): the request body ('' is an empty object)
        type_ (type): a request type of this module
    Returns:
        dict: the fields present, of their declared types
    Raises:
        errors.BadInput: ``bad_json`` (not JSON, not an object, too deep),
            ``unknown_field`` (all of them named), ``bad_<field>``
    """
    if not body:
        body = b"{}"
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as e:
        m = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise errors.BadInput("bad_json", f"body is not JSON: {m}") from None
    if not isinstance(raw, dict):
        raise errors.BadInput("bad_json", "body must be a JSON object")
    if not protocol.within_depth(raw, MAX_DEPTH):
        raise errors.BadInput(
            "bad_json", f"body is nested deeper than {MAX_DEPTH} levels"
        )
    x = sorted(set(raw) - set(type_.__struct_fields__))
    if x:
        raise errors.BadInput(
            "unknown_field",
            f"unknown field{'s' if len(x) > 1 else ''}: {', '.join(map(str, x))}",
        )
    try:
        v = msgspec.convert(raw, type_)
    except msgspec.ValidationError as e:
        m = _FIELD_RE.search(str(e))
        f = (m.group(1) or m.group(2)) if m else "field"
        raise errors.BadInput(f"bad_{f}", f"{f}: {e}") from None
    return {
        f: getattr(v, f)
        for f in type_.__struct_fields__
        if f in raw and getattr(v, f) is not UNSET
    }
