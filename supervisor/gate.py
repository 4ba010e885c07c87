"""The front door: how many connections, for how long, and surviving a full fd table.

- `raise_nofile_limit`: at start, the open-file limit goes up to its hard
  limit (a supervisor holds a socket per browser, client and agent).
- `Gate`: caps on open HTTP connections, in all and per client address;
  the excess is accepted and closed at once (cheap: no request is read).
  The cap in all stays below the open-file limit, so accepting never runs
  out of descriptors in normal operation.
- `Server`: Tornado's `HTTPServer` with the gate, header and body timeouts
  (a client that sends half a header and waits is dropped), and an accept
  loop that, should descriptors run out anyway (EMFILE), stops accepting
  for a moment and logs once, instead of spinning on the readable socket
  and logging a traceback per turn. A request whose header block is over
  the limit (Tornado's ``max_header_size``, 64 KiB) is answered with a JSON
  ``431`` and closed, no more of it read (`_Stream`); Tornado alone would
  close it unanswered.

A connection counts until it closes; a websocket counts again, once
authenticated, while it is open (`supervisor.ws`), so the cap in all holds
for both. Agents' websockets count in all but not per address (on one host,
every local agent dials from 127.0.0.1).
"""

import asyncio
import collections
import errno
import json
import resource

import tornado.httpserver
import tornado.iostream
from pykern.pkdebug import pkdexc, pkdlog

from supervisor import errors

#: descriptors kept free of HTTP connections (files, the store, agents' pipes)
FD_RESERVE = 64

#: how long accepting pauses when descriptors run out
_PAUSE_SECS = 0.5

#: accepts per readable event (as Tornado: a bound, so other work runs)
_ACCEPTS_PER_TURN = 128

#: HTTP1ConnectionParameters' header limit when none is given
_TORNADO_MAX_HEADER_BYTES = 65536

_OUT_OF_FDS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def raise_nofile_limit():
    """Soft open-file limit up to the hard one; returns the new soft limit."""
    s, h = resource.getrlimit(resource.RLIMIT_NOFILE)
    if s != h:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
            s = h
        except (ValueError, OSError) as e:
            pkdlog("cannot raise the open-file limit from {} to {}: {}", s, h, e)
    return s


class Gate:
    """Counts open connections; says whether one more may come in."""

    def __init__(self, max_total, max_per_address, unlimited=()):
        """
        Args:
            max_total (int): open connections at most (all servers sharing it)
            max_per_address (int): from one client address at most
            unlimited (iterable): addresses with no cap of their own (trusted
                proxies: every client behind them shares their address)
        """
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._unlimited = frozenset(unlimited)
        self.total = 0
        self.refused = 0
        self._by_address = collections.Counter()

    def admit(self, address, per_address=True):
        """One more from `address`? (`per_address`: its own cap applies)"""
        per_address = per_address and address not in self._unlimited
        if self.total >= self.max_total or (
            per_address and self._by_address[address] >= self.max_per_address
        ):
            self.refused += 1
            return False
        self.total += 1
        if per_address:
            self._by_address[address] += 1
        return True

    def release(self, address, per_address=True):
        """One from `address` closed (as it was admitted)."""
        self.total -= 1
        if per_address and address not in self._unlimited:
            self._by_address[address] -= 1
            if self._by_address[address] <= 0:
                del self._by_address[address]


def gate(cfg):
    """The `Gate` of the configuration, below the open-file limit."""
    n = raise_nofile_limit()
    t, a = caps(cfg.max_connections, cfg.max_connections_per_address, n)
    if (t, a) != (cfg.max_connections, cfg.max_connections_per_address):
        pkdlog("max_connections={} per address={} (open-file limit {})", t, a, n)
    return Gate(t, a, cfg.trusted_proxies)


def caps(total, per_address, nofile):
    """The connection caps that fit `nofile` open files: (total, per address).

    The total stays `FD_RESERVE` below the open-file limit; one address may
    hold at most half of it, so that no one client can take every slot.
    """
    t = min(total, max(16, nofile - FD_RESERVE))
    return t, max(1, min(per_address, t // 2))


class Server(tornado.httpserver.HTTPServer):
    """`HTTPServer` behind a `Gate`, with timeouts and a safe accept loop."""

    def initialize(self, *args, gate=None, per_address=True, **kwargs):
        """As `HTTPServer`'s, and `gate` (`Gate`, required); `per_address`:
        its connections count against their address's cap too."""
        super().initialize(*args, **kwargs)
        self._gate = gate
        self._per_address = per_address

    def handle_stream(self, stream, address):
        a = _address(address)
        if not self._gate.admit(a, self._per_address):
            stream.close()
            return
        super().handle_stream(stream, address)

    def on_close(self, server_conn):
        super().on_close(server_conn)
        self._gate.release(_address(server_conn.context.address), self._per_address)

    def add_sockets(self, sockets):
        assert self.ssl_options is None, "TLS is the reverse proxy's"
        for s in sockets:
            # TCPServer.stop closes what these two tables hold
            self._sockets[s.fileno()] = s
            self._handlers[s.fileno()] = _Acceptor(s, self._connection).stop

    def _connection(self, sock, address):
        """A new connection: our stream (`_Stream`), then as Tornado's."""
        try:
            self.handle_stream(
                _Stream(
                    self.conn_params.max_header_size or _TORNADO_MAX_HEADER_BYTES,
                    sock,
                    max_buffer_size=self.max_buffer_size,
                    read_chunk_size=self.read_chunk_size,
                ),
                address,
            )
        except Exception as e:
            pkdlog("connection from {} error={} stack={}", address, e, pkdexc())


class _Stream(tornado.iostream.IOStream):
    """An `IOStream` that answers a header block over the limit with a 431.

    Tornado reads headers with ``read_until_regex(..., max_bytes)`` and, when
    the limit is passed, closes the stream with `UnsatisfiableReadError`:
    that close is where the answer goes, written straight to the socket (a
    few hundred bytes into an empty send buffer), before the socket closes.
    Other bounded reads (a chunk's size line) are not headers: they close
    as Tornado does, with its 400 for a malformed request, which goes out
    as JSON too (`write`).
    """

    def __init__(self, max_header_bytes, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_header_bytes = max_header_bytes
        self._reading_headers = False

    def read_until_regex(self, regex, max_bytes=None):
        # HTTP1Connection reads only a header block with a regex
        self._reading_headers = max_bytes is not None
        return super().read_until_regex(regex, max_bytes)

    def read_until(self, delimiter, max_bytes=None):
        self._reading_headers = False
        return super().read_until(delimiter, max_bytes)

    def write(self, data):
        # Tornado's bare answer to a malformed request (a negative or
        # non-numeric Content-Length, a bad chunk size, a garbled request
        # line): the same, as JSON, as every error of the API
        if data == _TORNADO_BAD_REQUEST:
            data = _BAD_REQUEST
        return super().write(data)

    def close(self, exc_info=False):
        if (
            self._reading_headers
            and isinstance(exc_info, tornado.iostream.UnsatisfiableReadError)
            and not self.closed()
        ):
            self._reading_headers = False
            try:
                self.socket.send(_header_too_large(self._max_header_bytes))
            except OSError:
                # gone already, or its buffer is full: it is closed unanswered
                pass
        super().close(exc_info)


def _header_too_large(max_bytes):
    """The whole 431 reply (JSON, as every error of the API)."""
    return _reply(
        b"431 Request Header Fields Too Large", errors.HeadersTooLarge(max_bytes)
    )


def _reply(status_line, error):
    """A whole reply of `error` (an `errors.Error`) that closes the connection."""
    b = json.dumps(errors.body(error)).encode()
    return (
        b"HTTP/1.1 %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Cache-Control: no-store\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status_line, len(b), b)
    )


#: what Tornado answers a request it cannot parse with, before it closes
_TORNADO_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"

_BAD_REQUEST = _reply(
    b"400 Bad Request",
    errors.BadInput(
        "malformed_request",
        "the request is not well-formed HTTP/1.1 (its request line, a header,"
        " its Content-Length or its chunked body)",
    ),
)


def peer(request):
    """The address a request's connection counts against (`Gate`)."""
    return _address(request.connection.context.address)


def _address(address):
    """The client address a connection counts against (unix sockets: one)."""
    return address[0] if isinstance(address, tuple) and address else "unix"


class _Acceptor:
    """Accepts connections on `sock`; pauses when descriptors run out."""

    def __init__(self, sock, on_connection):
        self._sock = sock
        self._on_connection = on_connection
        self._loop = asyncio.get_running_loop()
        self._paused = None
        self._stopped = False
        self._out_of_fds = 0
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self):
        for _ in range(_ACCEPTS_PER_TURN):
            if self._stopped:
                return
            try:
                c, a = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno not in _OUT_OF_FDS:
                    raise
                self._pause(e)
                return
            self._on_connection(c, a)

    def _pause(self, error):
        self._out_of_fds += 1
        if self._out_of_fds == 1 or self._out_of_fds % 100 == 0:
            pkdlog(
                "out of descriptors, accepting paused {} s (times={}): {}",
                _PAUSE_SECS,
                self._out_of_fds,
                error,
            )
        self._loop.remove_reader(self._sock.fileno())
        self._paused = self._loop.call_later(_PAUSE_SECS, self._resume)

    def _resume(self):
        self._paused = None
        if not self._stopped:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        if self._paused is not None:
            self._paused.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
