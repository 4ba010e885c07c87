"""Expected failures of a request, with the HTTP status that reports them.

The HTTP and websocket layers translate these in one place each; anything
else is a fault of the service (500, logged with its stack), but for a
full disk, which is one too but says so (`from_os_error`: 507).
"""

import errno

#: what a full disk (or a full quota of the file system) raises
_DISK_FULL = frozenset((errno.ENOSPC, errno.EDQUOT))


class Error(Exception):
    status = 400

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class BadInput(Error):
    status = 400


class Unauthorized(Error):
    status = 401

    def __init__(self, message="sign in with a valid token"):
        super().__init__("unauthorized", message)


class Forbidden(Error):
    status = 403

    def __init__(self, message="admin role required", code="forbidden"):
        super().__init__(code, message)


class NotFound(Error):
    status = 404


class Conflict(Error):
    status = 409


class LengthRequired(Error):
    status = 411


class TooLarge(Error):
    status = 413


class RangeNotSatisfiable(Error):
    status = 416


class HeadersTooLarge(Error):
    """The request's header block is over the limit (answered by `gate`)."""

    status = 431

    def __init__(self, max_bytes):
        super().__init__(
            "headers_too_large",
            f"request headers are over the limit of {max_bytes} bytes",
        )


class InsufficientStorage(Error):
    """The service's disk is full: nothing of the request was kept."""

    status = 507

    def __init__(self, message="the server is out of disk space: try again later"):
        super().__init__("insufficient_storage", message)


class TooMany(Error):
    """Too many requests (or sockets, or sign-in failures): try again later."""

    status = 429

    def __init__(self, code, message, retry_after_secs=None):
        super().__init__(code, message)
        #: the ``Retry-After`` of the reply, if waiting helps
        self.retry_after_secs = retry_after_secs


def body(error):
    """The JSON body that reports `error` (an `Error`)."""
    return {"error": error.code, "message": error.message}


def from_os_error(error):
    """The `Error` that reports `error` (an OSError), or None: a 500 then."""
    if getattr(error, "errno", None) in _DISK_FULL:
        return InsufficientStorage()
    return None
