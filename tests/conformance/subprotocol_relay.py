"""A byte-transparent TCP relay that adds a WAMP subprotocol to WebSocket upgrades.

kosoku 0.1.0 has no option to offer a WebSocket subprotocol: its upgrade request
carries no ``Sec-WebSocket-Protocol`` header, and switchyard refuses such an
upgrade (400, "no supported WAMP subprotocol offered"). kosoku's client also
rejects a 101 response that names a subprotocol it did not ask for.

So each connection is relayed like this:

* client -> router: the HTTP upgrade request, with any ``Sec-WebSocket-Protocol``
  header replaced by ``Sec-WebSocket-Protocol: <subprotocol>``;
* router -> client: the HTTP response, with its ``Sec-WebSocket-Protocol`` header
  removed;
* after that, every byte both ways unchanged, in the chunks it arrived in
  (TCP_NODELAY on both legs, so chopped frames stay chopped), a FIN from one
  side passed on as a FIN (half-close), a reset passed on as a reset.

It listens on 127.0.0.1 on a port the OS picks.
"""

import asyncio
import re
import socket

_SUBPROTOCOL_HEADER = re.compile(rb"\r\nSec-WebSocket-Protocol:[^\r\n]*", re.IGNORECASE)
_MAX_HEAD = 65536


async def _read_head(reader):
    """Reads up to the end of an HTTP head; returns (head without the blank line, rest)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("connection closed before the end of the HTTP head")
        buf += chunk
        if len(buf) > _MAX_HEAD:
            raise ConnectionError("HTTP head too large")
    end = buf.index(b"\r\n\r\n")
    return buf[:end], buf[end + 4:]


def _nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class SubprotocolRelay:
    """Relay from 127.0.0.1:<port> to the router's WebSocket listener."""

    def __init__(self, upstream_host, upstream_port, subprotocol):
        self.upstream = (upstream_host, upstream_port)
        self.subprotocol = subprotocol.encode("ascii")
        self.port = None
        self._server = None
        self._tasks = set()

    async def start(self):
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self, grace=2.0):
        """Stops listening; gives open connections `grace` seconds to finish."""
        self._server.close()
        await self._server.wait_closed()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _accept(self, reader, writer):
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, creader, cwriter):
        _nodelay(cwriter)
        uwriter = None
        try:
            head, rest = await _read_head(creader)
            head = _SUBPROTOCOL_HEADER.sub(b"", head) + b"\r\nSec-WebSocket-Protocol: " + self.subprotocol
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
            _nodelay(uwriter)
            uwriter.write(head + b"\r\n\r\n" + rest)
            await uwriter.drain()
            rhead, rrest = await _read_head(ureader)
            cwriter.write(_SUBPROTOCOL_HEADER.sub(b"", rhead) + b"\r\n\r\n" + rrest)
            await cwriter.drain()
            await asyncio.gather(_pipe(creader, uwriter), _pipe(ureader, cwriter))
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (cwriter, uwriter):
                if w is not None:
                    w.close()
