"""Expected failures of a request, with the HTTP status that reports them.

The HTTP and websocket layers translate these in one place each; anything
else is a fault of the service (500, logged with its stack).
"""


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

    def __init__(self, message="admin role required"):
        super().__init__("forbidden", message)


class NotFound(Error):
    status = 404


class Conflict(Error):
    status = 409


class TooLarge(Error):
    status = 413


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
