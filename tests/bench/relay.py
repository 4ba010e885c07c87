"""A tiny websocket relay, the floor of the ``/api/events`` latency.

``python -m tests.bench.relay`` listens on an ephemeral loopback port, prints
it, and forwards every text frame that arrives on ``/in`` to every ``/out``
connection: one process hop between two websockets, as the supervisor does
between an agent and an events client, without parsing or state. It exits
when its stdin closes, so it never outlives the bench.
"""

import asyncio
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket


class Out(tornado.websocket.WebSocketHandler):
    def initialize(self, outs):
        self.outs = outs

    def open(self):
        self.set_nodelay(True)
        self.outs.add(self)

    def on_close(self):
        self.outs.discard(self)


class In(tornado.websocket.WebSocketHandler):
    def initialize(self, outs):
        self.outs = outs

    def open(self):
        self.set_nodelay(True)

    def on_message(self, message):
        for o in list(self.outs):
            o.write_message(message)


async def main():
    outs = set()
    await serve(
        tornado.web.Application(
            [(r"/in", In, {"outs": outs}), (r"/out", Out, {"outs": outs})]
        )
    )


async def serve(a):
    """Serve `a` on a free loopback port, printed, until stdin closes."""
    s = tornado.netutil.bind_sockets(0, "127.0.0.1")
    h = tornado.httpserver.HTTPServer(a)
    h.add_sockets(s)
    print(s[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    h.stop()


if __name__ == "__main__":
    asyncio.run(main())
