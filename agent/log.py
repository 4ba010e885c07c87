"""The agent's log: one ``time event key=value ...`` line per event on stderr.

The agent depends on the standard library and tornado only (no pykern), so
it has its own small logger. `stack` gives the end of a traceback for a
``error=`` value. Never log a secret.
"""

import datetime
import json
import sys
import traceback

#: a value longer than this is cut (a log line stays readable)
MAX_LOG_VALUE_CHARS = 2000


def log(event, **fields):
    """Write one ``time event key=value ...`` line to stderr. Never pass a secret.

    Args:
        event (str): what happened, one word
        fields: values; strings with spaces or quotes are JSON quoted
    """
    t = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    p = [t[:-4] + "Z", event]
    for k, v in fields.items():
        s = v if isinstance(v, str) else repr(v)
        if len(s) > MAX_LOG_VALUE_CHARS:
            s = s[:MAX_LOG_VALUE_CHARS] + "..."
        if not s or any(c.isspace() or c in "\"'=" for c in s):
            s = json.dumps(s)
        p.append(f"{k}={s}")
    sys.stderr.write(" ".join(p) + "\n")
    sys.stderr.flush()


def stack(e):
    """The end of `e`'s traceback (where it was raised), for `log`."""
    return "".join(traceback.format_exception(e))[-MAX_LOG_VALUE_CHARS:]
