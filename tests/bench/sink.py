"""A trivial streaming upload handler, the floor of the library's upload row.

``python -m tests.bench.sink`` serves ``PUT /<anything>`` on an ephemeral
loopback port (printed) with Tornado's ``stream_request_body``: each chunk
is counted and dropped, the reply is the count. No credentials, no limits,
no hash, no disk. It exits when its stdin closes.
"""

import asyncio

import tornado.web

from tests.bench.relay import serve


@tornado.web.stream_request_body
class Sink(tornado.web.RequestHandler):
    def prepare(self):
        self.request.connection.set_max_body_size(2**62)
        self.n = 0

    def data_received(self, chunk):
        self.n += len(chunk)

    def put(self, path):
        self.finish({"size": self.n})


if __name__ == "__main__":
    asyncio.run(serve(tornado.web.Application([(r"/(.*)", Sink)])))
