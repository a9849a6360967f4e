"""The fast front end of the proxy port.

On a sidecar's hot routes most requests are repeats that L1 answers. For those, aiohttp's
request objects, payload streams and response machinery cost more than the answer itself.
So each connection starts on a thin protocol that reads requests itself. A fresh L1 hit is
answered at once with a single write of a serialised response, which leaves with the other
answers of the loop's turn (``proxy/outbox.py``); every other request it can read (a Redis
lookup, a miss, a stale entry, an HTTP-mode or pass-through route) goes through the engine
(``proxy/engine.py``) and its reply is written here too, streamed when the upstream streams,
on the same connection and in order. A connection is handed to aiohttp's own protocol, for
good, only for what this front end does not handle: a request its parser refuses (aiohttp
answers the 400), ``Upgrade``, ``Expect``, chunked or compressed request bodies, bodies over
64 KiB, ``HEAD``, ``Connection: close``, HTTP/1.0, and targets that are not plain
origin-form paths.

Requests are read with aiohttp's own parser (``HttpRequestParser``, llhttp when aiohttp's C
extension is there), configured as aiohttp's protocol configures it, so the fast path accepts
exactly what aiohttp accepts: whatever the parser refuses is handed over, and aiohttp answers
it 400 as it would have. Only the head goes through the parser; the body is the
``Content-Length`` bytes after it, which the parser has checked. The head ends at the first
empty line, because the parser refuses a bare CR or LF anywhere in it (empty lines before a
request are the one exception: such requests are handed over). A head whose very bytes the
parser read whole and plain before is not read again: the same bytes read the same way, so
a repeated request, the common case of a hit, skips the parser (``FastPathServer.heads``).

Every connection is bounded (``proxy/connections.py``): in number, in idle time, and in the
time a request head takes to arrive. A body the fast path waits for longer than
``body_timeout`` is left, with its request, to aiohttp and the engine, which answer it 408.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpProcessingError, HttpRequestParser, HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader

from core.config import RouteConfig
from core.entry import CachedResponse
from core.outcome import fresh_hit
from proxy.connections import (
    BODY,
    BoundedRequestHandler,
    ConnectionLimits,
    Deadline,
    RefusedConnection,
)
from proxy.engine import CACHE_STATUS, Engine
from proxy.exchange import NO_BODY, BufferedBody, Keyed, Reply, Request
from proxy.handler import ProxyHandler
from proxy.outbox import Outbox

#: A request head or body bigger than this is not worth a fast look.
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
#: Heads read before, by their bytes (``FastPathServer.heads``): at most this many, each at
#: most this long: at most 4 MiB of heads, and their parsed copies about as much again.
HEAD_MEMO = 1024
MAX_MEMO_HEAD = 4096
#: Limits of aiohttp's parser, given to aiohttp's protocol and to the fast path's parser alike
#: (aiohttp's defaults).
PARSER_LIMITS = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 128}
_SET_HERE = ("content-length", "cache-status", "age")
_EMPTY_LINE = b"\r\n\r\n"
log = logging.getLogger(__name__)
_LINE_ENDS = b"\r\n"


class FastPathServer(web.Server):
    """``web.Server`` whose connections begin on the fast path, within ``limits``."""

    def __init__(self, engine: Engine, limits: ConnectionLimits, **kwargs: Any) -> None:
        kwargs = {**PARSER_LIMITS, **kwargs}
        super().__init__(ProxyHandler(engine).handle, **kwargs)
        self._build_request = self.request_factory
        self.request_factory = self._start_request
        self.proxy = engine
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.parser_limits = {name: kwargs[name] for name in PARSER_LIMITS}
        self.fast_connections: set[FastConnection] = set()
        #: Every answer written here leaves at the end of the loop's turn (``proxy/outbox.py``).
        self.outbox = Outbox(self.loop)
        #: Request heads the parser read whole and plain, by their bytes: the same bytes
        #: read the same way, so a repeated request (a hit, mostly) skips the parser.
        self.heads: dict[bytes, tuple[RawRequestMessage, str, int]] = {}
        # Serialised heads by entry; weak, so an entry L1 dropped is not kept alive here.
        self._wire: dict[int, tuple[weakref.ref[CachedResponse], bytes]] = {}

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if not self.limits.admit():
            return RefusedConnection()
        return FastConnection(self)

    def aiohttp_protocol(self) -> BoundedRequestHandler:
        return BoundedRequestHandler(self, limits=self.limits, loop=self.loop, **self._kwargs)

    def parser(self) -> HttpRequestParser:
        """A request parser as aiohttp's protocol has, except that it skips bodies
        (``response_with_body=False``): the fast path frames those itself."""
        return HttpRequestParser(
            _NO_BODY, self.loop, 2**16, response_with_body=False, **self.parser_limits
        )

    def _start_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: BoundedRequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # aiohttp builds each request just before handling it: a request is under way.
        protocol.request_started()
        return self._build_request(message, payload, protocol, writer, task)

    def pre_shutdown(self) -> None:
        # Idle connections close now; one answering a request closes once it has answered.
        for connection in list(self.fast_connections):
            connection.drain()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Let requests in flight on fast connections finish (within ``timeout``), then
        close what is left, and shut aiohttp's connections down as ``web.Server`` does."""
        busy = [c.answering for c in self.fast_connections if c.answering is not None]
        if busy:
            await asyncio.wait(busy, timeout=timeout)
        for connection in list(self.fast_connections):
            connection.close()
        await super().shutdown(timeout)

    def remember_head(self, raw: bytes, read: tuple[RawRequestMessage, str, int]) -> None:
        if len(self.heads) >= HEAD_MEMO:
            self.heads.clear()
        self.heads[raw] = read

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
        head = ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
        if len(self._wire) >= 4096:
            self._wire.clear()
        self._wire[id(entry)] = (weakref.ref(entry), head)
        return head


class FastConnection(asyncio.Protocol):
    """One client connection, answered from L1 until a request needs more.

    ``_buffer`` holds the bytes not yet answered, from the start of the first request in it;
    the parser has read ``_fed`` of them. Once that request's head is whole, ``_head`` is it,
    and the request ends at ``_size``."""

    def __init__(self, server: FastPathServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = server.parser()
        self._deadline = Deadline(server.loop, server.limits, self._expired)
        self._buffer = bytearray()
        self._fed = 0
        self._head: RawRequestMessage | None = None
        self._path = ""
        self._size = 0
        #: Loop times: when the first byte of the first request arrived; when its head ended.
        self._started = 0.0
        self._head_ended = 0.0
        self._paused = False
        #: The request being answered asynchronously (Redis, the engine), if any.
        self._busy: asyncio.Future[None] | None = None
        #: Set while the client reads what is written (cleared by ``pause_writing``).
        self._writable = asyncio.Event()
        self._writable.set()
        self._draining = False
        self._peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else ""
        self._server.fast_connections.add(self)
        self._deadline.idle(self._server.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        # (After a hand-over this protocol is no longer the transport's: aiohttp's releases.)
        self._server.fast_connections.discard(self)
        self._server.limits.release()
        self._deadline.cancel()
        self._transport = None
        self._writable.set()
        if self._busy is not None:
            self._busy.cancel()  # a client that goes away cancels its request

    def close(self) -> None:
        if self._transport is not None:
            self._server.outbox.flush()  # (close() sends what the transport holds, not more)
            self._transport.close()

    @property
    def answering(self) -> asyncio.Future[None] | None:
        """The request being answered asynchronously, if any."""
        return self._busy

    def drain(self) -> None:
        """Serve no further request: close now when idle, else once the answer is written."""
        self._draining = True
        if self._busy is None:
            self.close()

    def _expired(self, reason: str) -> None:
        if reason == BODY:
            # The handler bounds bodies too, and answers one that stops arriving (408).
            self._hand_over()
            return
        self._server.limits.closed(reason)
        if self._paused and self._transport is not None:
            self._transport.abort()  # its answers are unread: close() would wait on them
        else:
            self.close()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests. It has
        # idle_timeout to start reading again.
        self._paused = True
        self._writable.clear()
        self._deadline.idle(self._server.loop.time())
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._writable.set()
        if self._transport is not None:
            self._transport.resume_reading()
            self._serve(self._server.loop.time())

    def data_received(self, data: bytes) -> None:
        now = self._server.loop.time()
        if not self._buffer:
            self._started = now
        self._buffer += data
        self._serve(now)

    def _serve(self, now: float) -> None:
        """Answer what is buffered, then put the connection under the bound of its state."""
        self._answer_buffered(now)
        if not self._ready:
            if self._busy is not None:
                self._deadline.pause()
        elif not self._buffer:
            self._deadline.idle(now)
        elif self._head is None:
            self._deadline.head(self._started)
        else:
            self._deadline.body(self._head_ended)

    def _answer_buffered(self, now: float) -> None:
        proxy = self._server.proxy
        while self._buffer and self._ready:
            started = time.perf_counter()
            head = self._head or self._read_head(now)
            if head is None:  # still arriving, or handed over
                return
            if len(self._buffer) < self._size:  # the body is still arriving
                return
            body = bytes(self._buffer[self._fed : self._size]) if self._fed < self._size else b""
            try:
                raw = bytes(self._buffer[: self._size])
                found = proxy.fast_key(
                    raw, head.method, self._path, head.path, head.headers, body, self._peer
                )
            except Exception:  # the engine meets it too, and answers it as it does errors
                found = None
            if found is not None:
                entry = proxy.fresh_local(found.route, found.key)
                if entry is not None:
                    self._write(found.route, entry, started)
                    self._consume(now)
                    continue
            # Anything else goes through the engine (with what was found out here); the
            # requests behind it wait their turn (answers stay in order).
            self._busy = asyncio.ensure_future(self._answer(body, started, found))
            return

    def _read_head(self, now: float) -> RawRequestMessage | None:
        """Give the parser the first request's head as it arrives. The head once it is whole
        and plain; ``None`` while it is still arriving or once the connection is handed over."""
        buffer = self._buffer
        if self._fed == 0 and buffer[0] in _LINE_ENDS:
            self._hand_over()  # empty lines before a request: aiohttp skips them, we do not
            return None
        end = buffer.find(_EMPTY_LINE, max(self._fed - 3, 0), MAX_HEAD)
        if end < 0 and len(buffer) >= MAX_HEAD:
            self._hand_over()
            return None
        stop = len(buffer) if end < 0 else end + 4
        whole = bytes(buffer[:stop]) if self._fed == 0 and 0 <= end < MAX_MEMO_HEAD else None
        known = self._server.heads.get(whole) if whole is not None else None
        if known is not None:  # these very bytes were read before: the parser is at rest
            head, path, length = known
            self._fed = stop
        else:
            head, length = self._parse(buffer, end, stop)
            if head is None:
                return None
            path = head.path.partition("?")[0]
            if whole is not None:
                self._server.remember_head(whole, (head, path, length))
        self._head, self._path, self._size = head, path, stop + length
        self._head_ended = now
        return head

    def _parse(
        self, buffer: bytearray, end: int, stop: int
    ) -> tuple[RawRequestMessage, int] | tuple[None, None]:
        """Feed the parser up to ``stop``; the head and its body length once it is whole
        and plain, ``(None, None)`` while it is still arriving or once handed over."""
        try:
            messages = self._parser.feed_data(buffer[self._fed : stop])[0]
        except HttpProcessingError:
            self._hand_over()  # refused: aiohttp answers it 400
            return None, None
        self._fed = stop
        if end < 0 and not messages:
            return None, None  # still arriving (a refused head is handed over at once)
        # The parser must end the head at the first empty line, or the framing here is wrong.
        head = messages[0][0] if end >= 0 and len(messages) == 1 else None
        length = -1 if head is None else _plain_length(head)
        if head is None or length < 0:
            self._hand_over()
            return None, None
        return head, length

    def _consume(self, now: float) -> None:
        """The first request is answered: what follows is the next one, from now."""
        del self._buffer[: self._size]
        self._head, self._fed = None, 0
        self._started = now

    async def _answer(self, body: bytes, started: float, keyed: Keyed | None) -> None:
        """A request the fast path could not answer at once goes through the engine (which
        asks each remote tier once); its reply is written here, then the next request's
        turn comes."""
        head = self._head
        assert head is not None
        engine = self._server.proxy
        request = Request(
            method=head.method,
            path=self._path,
            target=keyed.target
            if keyed is not None
            else engine.target(head.path, head.headers, "http", self._peer),
            headers=head.headers,
            peer=self._peer,
            body=BufferedBody(body) if body else NO_BODY,
            keyed=keyed,
        )
        reply: Reply | None = None
        status = 499  # the client went away first
        try:
            reply = await engine.handle(request)
            await self._send(reply)
            status = reply.status
        finally:
            if reply is not None and reply.stream is not None:
                reply.stream.release()
            engine.record(request, reply, status, time.perf_counter() - started)
            self._busy = None
            if self._draining:
                self.close()
            elif self._transport is not None:
                now = self._server.loop.time()
                self._consume(now)
                self._serve(now)

    async def _send(self, reply: Reply) -> None:
        """Write ``reply``: at once when it is whole, else as its upstream stream arrives,
        with the client's reading pace (``_writable``)."""
        if self._transport is None:
            return
        # (HEAD and ``Connection: close`` requests are aiohttp's: see ``_plain_length``.)
        close = reply.close
        stream = reply.stream
        if reply.replays is not None and not close:  # as stored: its serialised head
            headers = reply.headers
            head = self._server.wire(reply.replays)
            status, age = headers[CACHE_STATUS].encode(), headers["Age"].encode()
            self._emit(_hit_bytes(head, status, age, reply.body))
        elif stream is None:
            self._emit(_head_bytes(reply, len(reply.body), close) + reply.body)
        else:
            length = stream.content_length if not reply.prefix else None
            await self._relay(reply, stream, length, close)
        if close:
            self.close()
            self._transport = None

    async def _relay(self, reply: Reply, stream: Any, length: int | None, close: bool) -> None:
        chunked = length is None
        self._emit(_head_bytes(reply, length, close, chunked=chunked))
        try:
            if reply.prefix:
                await self._write_chunk(reply.prefix, chunked)
            async for chunk in stream.content.iter_any():
                await self._write_chunk(chunk, chunked)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The head is sent: the only honest signal left is a cut connection.
            log.warning("upstream stream broke off: %r", exc)
            if self._transport is not None:
                self._server.outbox.flush()
                self._transport.abort()
            raise
        if chunked and self._transport is not None:
            self._emit(b"0\r\n\r\n")

    async def _write_chunk(self, chunk: bytes, chunked: bool) -> None:
        if self._transport is None:
            raise ConnectionResetError("client went away")
        self._emit(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if self._paused:
            await self._writable.wait()

    @property
    def _ready(self) -> bool:
        return not self._paused and self._busy is None and self._transport is not None

    def _write(self, route: RouteConfig, entry: CachedResponse, started: float) -> None:
        head = self._server.wire(entry)
        age = b"%d" % entry.age(time.time())
        assert self._transport is not None and self._head is not None
        self._emit(_hit_bytes(head, _L1_HIT, age, entry.body))
        elapsed = time.perf_counter() - started
        proxy = self._server.proxy
        proxy.record_fast_hit(route, self._head.method, self._path, entry.status, elapsed)

    def _emit(self, data: bytes) -> None:
        """Send ``data`` at the end of this turn of the loop, after what this connection
        sent before."""
        assert self._transport is not None
        self._server.outbox.write(self._transport, data)

    def _hand_over(self) -> None:
        """From now on aiohttp serves this connection, beginning with what is buffered."""
        transport, self._transport = self._transport, None
        self._server.fast_connections.discard(self)
        self._deadline.cancel()
        if transport is None:
            return
        self._server.outbox.flush()  # the answers before the handed-over request go first
        protocol = self._server.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        buffered, self._buffer = bytes(self._buffer), bytearray()
        if buffered:
            # A whole head is parsed at once there, which starts its request; a part of one
            # keeps the deadline it has had since its first byte.
            protocol.continue_from(buffered, self._started if self._head is None else None)


def _hit_bytes(head: bytes, cache_status: bytes, age: bytes, body: bytes) -> bytes:
    """A stored answer (``head``: its serialised status line and headers) as sent: one
    buffer, one send."""
    return b"%sCache-Status: %s\r\nAge: %s\r\n\r\n%s" % (head, cache_status, age, body)


_L1_HIT = fresh_hit("l1").cache_status.encode()


def _head_bytes(reply: Reply, length: int | None, close: bool, chunked: bool = False) -> bytes:
    """Status line and headers of a reply whose body is ``length`` bytes (``None`` with
    ``chunked``: sent in chunks)."""
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {reply.status} {phrase}"]
    lines += [f"{n}: {v}" for n, v in reply.headers.items() if n.lower() not in _FRAMING]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    # (aiohttp decodes header bytes as UTF-8 with surrogate escapes: the same bytes go out)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


#: Framing headers the fast path writes itself.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def _plain_length(head: RawRequestMessage) -> int:
    """The body length of a request the fast path may answer; -1 for any other."""
    # (Spelled out rather than looped: this runs for every hit.)
    if (
        head.version != HttpVersion11
        or head.should_close
        or head.upgrade
        or head.chunked
        or head.compression is not None
        or head.method == "HEAD"
    ):
        return -1
    target = head.path
    if target[0] != "/" or "%" in target or "#" in target or "/." in target or "//" in target:
        return -1
    headers = head.headers
    if "Transfer-Encoding" in headers or "Expect" in headers or "Upgrade" in headers:
        return -1
    length = headers.get("Content-Length")
    if length is None:
        return 0
    size = int(length)  # (the parser checked it: digits only)
    return size if size <= MAX_BODY else -1


class _NoBody:
    """The protocol the parser is given. It never reaches the C parser when bodies are
    skipped; the pure-Python parser still gives each skipped body an empty stream, which
    tells its protocol that reading may go on."""

    _reading_paused = False

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass

    def pause_reading(self) -> None:
        pass


_NO_BODY = _NoBody()
