"""The L1 fast path of the proxy port.

On a sidecar's hot routes most requests are repeats that L1 answers. For those, aiohttp's
request objects, payload streams and response machinery cost more than the answer itself.
So each connection starts on a thin protocol that reads requests itself: one it fully
understands, whose fresh answer is in L1 (or, one batched round trip away, in Redis), is
answered with a single write of a serialised response. Anything else (a miss, a stale
entry, an HTTP-mode or pass-through route, a request with anything unusual in it) hands
the connection, starting with the bytes of the request not yet answered, to aiohttp's own
protocol for good. (A miss on the fast path has asked Redis once; the handler asks again:
one extra batched round trip on the first miss of a connection.)

What "fully understands" means is deliberately narrow: ``HTTP/1.1``, a token method, an
origin-form ASCII target without ``%``, dot segments or ``//``, ASCII headers with unique
names and no whitespace before the colon, no ``Transfer-Encoding``, ``Expect``, ``Upgrade``
or ``Connection: close``, and a single decimal ``Content-Length``. Everything else is
aiohttp's to parse, accept or reject.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from http import HTTPStatus

from aiohttp import web
from multidict import CIMultiDict

from core.config import RouteConfig
from core.entry import CachedResponse
from core.keys import RequestKey
from proxy.handler import ProxyHandler

#: A request head or body bigger than this is not worth a fast look.
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
_REFUSED_HEADERS = ("transfer-encoding", "expect", "upgrade")
_KEEP_ALIVE = ("", "keep-alive")
_SET_HERE = ("content-length", "cache-status", "age")
_ODD_TARGET = ("%", "#", "/.", "//")


class FastPathServer(web.Server):
    """``web.Server`` whose connections begin on the fast path."""

    def __init__(self, handler: ProxyHandler, **kwargs: object) -> None:
        super().__init__(handler.handle, **kwargs)
        self.proxy = handler
        self.has_remote = bool(handler.remote_tiers)
        self.fast_connections: set[FastConnection] = set()
        # Serialised heads by entry; weak, so an entry L1 dropped is not kept alive here.
        self._wire: dict[int, tuple[weakref.ref[CachedResponse], bytes]] = {}

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        return FastConnection(self)

    def aiohttp_protocol(self) -> asyncio.Protocol:
        return super().__call__()

    def pre_shutdown(self) -> None:
        # A fast connection is idle between requests (answers are written at once): close.
        for connection in list(self.fast_connections):
            connection.close()
        super().pre_shutdown()

    def wire(self, entry: CachedResponse) -> bytes:
        """Status line and stored headers, serialised once per entry."""
        known = self._wire.get(id(entry))
        if known is not None and known[0]() is entry:
            return known[1]
        try:
            phrase = HTTPStatus(entry.status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {entry.status} {phrase}"]
        lines += [f"{n}: {v}" for n, v in entry.headers if n.lower() not in _SET_HERE]
        lines.append(f"Content-Length: {len(entry.body)}")
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        if len(self._wire) >= 4096:
            self._wire.clear()
        self._wire[id(entry)] = (weakref.ref(entry), head)
        return head


class FastConnection(asyncio.Protocol):
    """One client connection, answered from L1 until a request needs more."""

    def __init__(self, server: FastPathServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._lookup: asyncio.Future[None] | None = None
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        self._server.fast_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.fast_connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            self._answer_buffered()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._answer_buffered()

    def _answer_buffered(self) -> None:
        proxy = self._server.proxy
        while self._buffer and self._ready:
            started = time.perf_counter()
            request = _parse(self._buffer)
            if request is None:  # incomplete: wait for more bytes
                return
            found = None if request is _DELEGATE else proxy.fast_key(*request.fields, self._peer)
            if found is None:
                self._hand_over()
                return
            route, key = found
            entry = proxy.fresh_local(route, key)
            if entry is not None:
                self._write(request, route, entry, "l1", started)
                continue
            if not self._server.has_remote:
                self._hand_over()
                return
            # Ask Redis; the requests behind this one wait their turn (answers stay in order).
            self._lookup = asyncio.ensure_future(self._answer_remote(request, route, key, started))
            return

    async def _answer_remote(
        self, request: _Request, route: RouteConfig, key: RequestKey, started: float
    ) -> None:
        try:
            hit = await self._server.proxy.fresh_remote(route, key)
        finally:
            self._lookup = None
        if self._transport is None:  # the client went away meanwhile
            return
        if hit is None:
            self._hand_over()
            return
        self._write(request, route, hit.entry, hit.tier, started)
        self._answer_buffered()

    @property
    def _ready(self) -> bool:
        return not self._paused and self._lookup is None and self._transport is not None

    def _write(
        self,
        request: _Request,
        route: RouteConfig,
        entry: CachedResponse,
        tier: str,
        started: float,
    ) -> None:
        head = self._server.wire(entry)
        age = int(entry.age(time.time()))
        assert self._transport is not None
        tail = b"Cache-Status: sidecache; hit; detail=%s\r\nAge: %d\r\n\r\n" % (tier.encode(), age)
        self._transport.write(b"".join((head, tail, entry.body)))  # one buffer: one send
        del self._buffer[: request.size]
        elapsed = time.perf_counter() - started
        proxy = self._server.proxy
        proxy.record_fast_hit(route, tier, request.method, request.path, entry.status, elapsed)

    def _hand_over(self) -> None:
        """From now on aiohttp serves this connection, beginning with what is buffered."""
        transport, self._transport = self._transport, None
        self._server.fast_connections.discard(self)
        if transport is None:
            return
        protocol = self._server.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        buffered, self._buffer = bytes(self._buffer), bytearray()
        if buffered:
            protocol.data_received(buffered)


class _Request:
    """A request the fast path may answer; ``size`` is its length in the buffer."""

    __slots__ = ("body", "headers", "method", "path", "size", "target")

    def __init__(
        self, method: str, path: str, target: str, headers: CIMultiDict[str], body: bytes, size: int
    ) -> None:
        self.method = method
        self.path = path
        self.target = target
        self.headers = headers
        self.body = body
        self.size = size

    @property
    def fields(self) -> tuple[str, str, str, CIMultiDict[str], bytes]:
        return self.method, self.path, self.target, self.headers, self.body


_DELEGATE = _Request("", "", "", CIMultiDict(), b"", 0)


def _parse(buffer: bytearray) -> _Request | None:
    """The first request in ``buffer``; ``None`` if incomplete, ``_DELEGATE`` if not ours."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0:
        return None if len(buffer) < MAX_HEAD else _DELEGATE
    head = bytes(buffer[:end])
    line_ends = head.count(b"\r\n")
    if not head.isascii() or head.count(b"\n") != line_ends or head.count(b"\r") != line_ends:
        return _DELEGATE  # a bare CR or LF: leave such requests to aiohttp's parser
    request_line, *lines = head.decode("ascii").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not parts[0].isalpha():
        return _DELEGATE
    method, target = parts[0], parts[1]
    if (
        method == "HEAD"
        or not target.startswith("/")
        or any(s in target for s in ("%", "#", "/.", "//"))
    ):
        return _DELEGATE
    headers = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or name in headers:
            return _DELEGATE  # (``in`` is case-insensitive: a name given twice is refused)
        headers[name] = value.strip()
    if any(name in headers for name in _REFUSED_HEADERS):
        return _DELEGATE
    if headers.get("connection", "").lower() not in _KEEP_ALIVE:
        return _DELEGATE
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return _DELEGATE
    size = end + 4 + int(length)
    if len(buffer) < size:
        return None
    path = target.partition("?")[0]
    return _Request(method, path, target, headers, bytes(buffer[end + 4 : size]), size)
