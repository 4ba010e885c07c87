"""Push: every change a subscriber may see, sent as it happens.

Subscribers are the ``/api/events`` websockets. A user sees their own
simulations; an admin sees everyone's. Nothing here awaits: a message is
queued on each websocket and Tornado writes it out.
"""

import json

from pykern.pkdebug import pkdlog

#: a subscriber this far behind is disconnected (it resynchronises on reconnect)
MAX_BUFFERED_BYTES = 8 * 1024 * 1024


class Hub:
    def __init__(self):
        # owner name -> set of subscribers; admins are in every fan-out
        self._by_user = {}
        self._admins = set()
        self.sent = 0

    def subscribe(self, sub):
        if sub.user.is_admin():
            self._admins.add(sub)
        else:
            self._by_user.setdefault(sub.user.name, set()).add(sub)

    def unsubscribe(self, sub):
        self._admins.discard(sub)
        s = self._by_user.get(sub.user.name)
        if s:
            s.discard(sub)
            if not s:
                del self._by_user[sub.user.name]

    def close_user(self, name):
        """End a user's connections (their sessions were revoked)."""
        for s in list(self._by_user.get(name, ())) + [
            s for s in self._admins if s.user.name == name
        ]:
            s.closed = True
            self.unsubscribe(s)
            s.close()

    def open_of(self, name):
        """Open streams of user `name`."""
        return len(self._by_user.get(name, ())) + sum(
            1 for s in self._admins if s.user.name == name
        )

    def count(self):
        return len(self._admins) + sum(len(s) for s in self._by_user.values())

    def publish(self, owner, simulation_id, msg):
        """Send `msg` (a dict with "type") to those who may see `owner`'s work."""
        subs = self._by_user.get(owner, ())
        if not subs and not self._admins:
            return
        t = json.dumps(msg, separators=(",", ":"))
        for s in (*subs, *self._admins):
            if s.wants(simulation_id):
                self.sent += 1
                s.send_text(t)


class Subscriber:
    """One ``/api/events`` connection; `write` is the websocket's writer.

    Counts the bytes Tornado has not yet written to the socket (each write's
    future resolves when it is), so a stalled client cannot make us buffer
    without bound.
    """

    def __init__(self, user, simulation_id, write, close):
        self.user = user
        self.simulation_id = simulation_id
        self._write = write
        self._close = close
        self._pending_bytes = 0
        self.closed = False

    def close(self):
        self._close()

    def wants(self, simulation_id):
        return self.simulation_id is None or self.simulation_id == simulation_id

    def send_text(self, text):
        if self.closed:
            return
        if self._pending_bytes > MAX_BUFFERED_BYTES:
            pkdlog("slow events subscriber user={} closed", self.user.name)
            self.closed = True
            self._close()
            return
        n = len(text)
        self._pending_bytes += n
        try:
            f = self._write(text)
        except Exception:
            # closed under us: on_close unsubscribes
            self.closed = True
            return
        f.add_done_callback(lambda f: self._written(f, n))

    def _written(self, future, n):
        self._pending_bytes -= n
        if not future.cancelled():
            # a closed stream: nothing to do, on_close cleans up
            future.exception()
