"""An agent's record and its connection states, with their transition table.

Pure: no I/O, no awaits. Like `job.py`'s statuses, an agent's connection
state changes only through `Agent.transition`, which refuses what the table
does not allow, so an illegal change is a bug the tests catch:

- ``starting``: its driver is starting it (or a sign-in is); no hello yet
- ``connected``: it said hello on a live connection
- ``disconnected``: its connection closed; it may reconnect and say hello
- ``stopped``: forgotten for good (killed, reaped, failed to start); final

An agent known before a supervisor restart is loaded ``disconnected``.
"""

import time

STARTING = "starting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
STOPPED = "stopped"

STATES = frozenset((STARTING, CONNECTED, DISCONNECTED, STOPPED))

#: from -> allowed next states
TRANSITIONS = {
    # a starting agent whose connection drops before hello stays starting:
    # its start deadline still runs
    STARTING: {CONNECTED, STOPPED},
    CONNECTED: {DISCONNECTED, STOPPED},
    DISCONNECTED: {CONNECTED, STOPPED},
    STOPPED: set(),
}

#: states in which the agent is someone's (a sign-in need not be repeated)
LIVE = frozenset((STARTING, CONNECTED))


class IllegalTransition(AssertionError):
    """A change the table does not allow: always a bug."""


class Agent:
    """One agent: who it is, how it is connected, what it holds.

    `Agents` changes the connection fields; `Runs` tells it the load
    (``run_ids``, ``cores``) through `Agents.load_changed`.
    """

    def __init__(self, doc, state=DISCONNECTED):
        self.id = doc["id"]
        self.user = doc["user"]
        self.driver = doc["driver"]
        self.host = doc["host"]
        self.secret_hash = doc["secret_hash"]
        self.created = doc.get("created", time.time())
        # what the driver needs to find it again (pid, container id)
        self.info = dict(doc.get("info", {}))
        if state not in STATES:
            raise ValueError(f"unknown agent state={state!r}")
        self.state = state
        #: the open websocket (`supervisor.ws.Agent`), or None
        self.conn = None
        #: resolved at hello; a new one after each disconnect
        self.ready = None
        self.connected_since = None
        self.last_message_at = None
        #: the runs it holds and their cores, as `Runs` last said
        self.run_ids = ()
        self.cores = 0
        #: op id -> future of its reply
        self.ops = {}
        #: its one deadline (start, reconnect or idle), a TimerHandle
        self.timer = None
        #: times its process died holding runs and was started again
        self.restarts = 0
        #: when (monotonic) each of those restarts was, the recent ones
        self.restart_times = []
        #: why it is being started again (its runs wait for its hello), or None
        self.restarting = None

    def transition(self, state):
        """Move to `state` or raise `IllegalTransition`."""
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"agent={self.id} {self.state} -> {state}")
        self.state = state

    def is_ready(self):
        """Connected, with a live connection: ops may be sent."""
        return self.state == CONNECTED and self.conn is not None

    def to_doc(self):
        return {
            "id": self.id,
            "user": self.user,
            "driver": self.driver,
            "host": self.host,
            "secret_hash": self.secret_hash,
            "created": self.created,
            "info": self.info,
        }

    def to_dict(self):
        return {
            "id": self.id,
            "user": self.user,
            "driver": self.driver,
            "host": self.host,
            "state": self.state,
            "connected_since": self.connected_since,
            "last_message_at": self.last_message_at,
            "runs": sorted(self.run_ids),
            "pid": self.info.get("pid"),
            "container_id": self.info.get("container_id"),
        }

    def pkdebug_str(self):
        return f"Agent({self.id} user={self.user} state={self.state})"
