"""Checks of names that come from requests: users, input files, output paths.

One place for the rules, so every handler refuses the same bad names with a
4xx (`errors.BadInput`) before a name reaches the file system, a header or a
store. Pure: no I/O. Each check returns the value it was given, unchanged, so
a handler reads ``n = names.input_name(n)``. Patterns are matched against the
whole string (``re.fullmatch``): ``$`` would also match before a trailing
newline.

`content_disposition` is the header of a download, built so that any output
name (quotes, CR/LF, non-Latin-1) gives one valid header value.
"""

import re
import urllib.parse

from agent.codes.stats import SOURCE_FILE
from agent.rundir import PARAMS_FILE
from agent.run import LOG_FILE
from agent.slurm_text import ERR_FILE, OUT_FILE, SCRIPT_FILE

from supervisor import errors

#: input file names the agent or the supervisor write into (or read from) a
#: run directory themselves: an upload of one would clobber it
RESERVED = {
    PARAMS_FILE: "the agent writes the run's parameters to it",
    LOG_FILE: "the agent writes the run's log to it",
    SOURCE_FILE: "the supervisor writes an analysis's source frames to it",
    SCRIPT_FILE: "the agent writes a batch run's job script to it",
    OUT_FILE: "Slurm writes a batch run's stdout to it",
    ERR_FILE: "Slurm writes a batch run's stderr to it",
}

MAX_INPUT_NAME_CHARS = 100
#: NAME_MAX of Linux file systems
MAX_NAME_BYTES = 255
#: PATH_MAX
MAX_PATH_CHARS = 4096

_USER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_LOGIN_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# C0, DEL and C1 (Unicode category Cc) and lone surrogates (not UTF-8)
_BAD_CHARS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
# what may stand in the quoted filename="..." fallback: printable ASCII less
# the quote and backslash (quoted-string escapes that browsers disagree on),
# "%" (some browsers percent-decode it) and "/"
_FALLBACK_BAD_RE = re.compile(r'[^\x20-\x7e]|["\\%/]')
# attr-char of RFC 5987 other than ALPHA / DIGIT (quote keeps those and "_.-~")
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


def user_name(v):
    """A user name of this service: lower-case letter, then letters, digits, _ or -.

    Returns:
        str: `v`
    Raises:
        BadInput: bad_name
    """
    if not isinstance(v, str) or not _USER_RE.fullmatch(v):
        raise errors.BadInput(
            "bad_name", "user name: lower-case letters, digits, _ or -, up to 32"
        )
    return v


def login_user(v):
    """A user name on a login node (POSIX-ish: letters, digits, _ . -, up to 32).

    Returns:
        str: `v`
    Raises:
        BadInput: bad_user
    """
    if not isinstance(v, str) or not _LOGIN_USER_RE.fullmatch(v):
        raise errors.BadInput("bad_user", "give your user name on the login node")
    return v


def input_name(v):
    """The name of an uploaded input file: a plain file name that is not reserved.

    Returns:
        str: `v`
    Raises:
        BadInput: bad_name, or reserved_name (see `RESERVED`)
    """
    why = _input_name_fault(v)
    if why is not None:
        raise errors.BadInput(
            "bad_name", f"input file name must be a plain file name ({why})"
        )
    r = RESERVED.get(v)
    if r is not None:
        raise errors.BadInput(
            "reserved_name", f"input file name={v!r} is reserved: {r}"
        )
    return v


def output_path(v):
    """A path relative to a run directory, as a download URL gives it.

    Only its form is checked; `supervisor.files` resolves it inside the run
    directory, so ``..`` or an absolute path is "no such file" there (404).

    Returns:
        str: `v`
    Raises:
        BadInput: bad_path
    """
    why = _output_path_fault(v)
    if why is not None:
        raise errors.BadInput("bad_path", f"output path: {why}")
    return v


def content_disposition(name):
    """The ``Content-Disposition`` value of a download named `name` (RFC 6266).

    ``filename`` is an ASCII fallback (anything unsafe replaced by ``_``) for
    old clients; ``filename*`` (RFC 5987) is the name itself in UTF-8, which
    clients that know it prefer. The value is ASCII, so it is always a valid
    single header line.

    Args:
        name (str): any text; a lone surrogate (not encodable) becomes U+FFFD
    Returns:
        str: the header value
    """
    n = _SURROGATE_RE.sub("\ufffd", name)
    f = _FALLBACK_BAD_RE.sub("_", n) or "download"
    q = urllib.parse.quote(n, safe=_ATTR_CHAR_SAFE, encoding="utf-8")
    return f"attachment; filename=\"{f}\"; filename*=UTF-8''{q}"


def _input_name_fault(v):
    if not isinstance(v, str) or not v:
        return "not empty"
    if len(v) > MAX_INPUT_NAME_CHARS:
        return f"at most {MAX_INPUT_NAME_CHARS} characters"
    # before encoding: a lone surrogate is not UTF-8
    if _BAD_CHARS_RE.search(v):
        return "no control characters, UTF-8 text"
    if len(v.encode("utf-8")) > MAX_NAME_BYTES:
        return f"at most {MAX_NAME_BYTES} bytes in UTF-8"
    if v != v.strip():
        return "no space at either end"
    if "/" in v:
        return "no /"
    if v.startswith("."):
        # also "." and ".."
        return "not starting with ."
    return None


def _output_path_fault(v):
    if not isinstance(v, str) or not v:
        return "give a path"
    if len(v) > MAX_PATH_CHARS:
        return f"at most {MAX_PATH_CHARS} characters"
    if _BAD_CHARS_RE.search(v):
        return "no control characters, UTF-8 text"
    if len(v.encode("utf-8")) > MAX_PATH_CHARS:
        return f"at most {MAX_PATH_CHARS} bytes in UTF-8"
    if any(len(c.encode("utf-8")) > MAX_NAME_BYTES for c in v.split("/")):
        return f"each component at most {MAX_NAME_BYTES} bytes in UTF-8"
    return None
