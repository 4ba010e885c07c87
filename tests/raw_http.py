"""HTTP on a bare socket, for the tests that send what no client library would."""

import socket


def reply(port, data):
    """Send `data` (as far as the server takes it); the reply as bytes.

    Reads until the connection ends (closed or reset) or a JSON body is
    complete, whichever comes first.
    """
    c = socket.create_connection(("127.0.0.1", port), 5)
    try:
        c.settimeout(10)
        try:
            c.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            # refused before all was sent: the answer may be there still
            pass
        r = b""
        while b"\r\n\r\n" not in r or not r.rstrip().endswith(b"}"):
            try:
                d = c.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            r += d
        return r
    finally:
        c.close()
