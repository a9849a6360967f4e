"""A lean pooled HTTP/1.1 client for the one service sidecache forwards to.

aiohttp's ``ClientSession`` is a general client: URL objects, cookie jars, redirects,
tracing, a connector for any host. A sidecar talks to one origin with targets it must send
verbatim, so most of that is cost without use. Here a request is one buffer written on a
pooled keep-alive connection, and its answer is read with aiohttp's own response parser
(``HttpResponseParser``, llhttp in aiohttp's C extension) into aiohttp's ``StreamReader``:
the parsing is the one ``ClientSession`` does, and a body offers what
``ClientResponse.content`` offers (``read(n)``, ``readany()``, ``iter_any()``).

Errors are aiohttp's client exception types (the subclasses below), so code written against
``ClientSession`` catches them unchanged: ``aiohttp.ClientError`` for anything that went
wrong, ``TimeoutError`` for timeouts. ``UpstreamClosed`` also says whether the connection
was a reused one and whether any byte of the answer had arrived: what deciding on a replay
needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterable, Mapping

import aiohttp
from aiohttp.http import HttpProcessingError, HttpResponseParser, RawResponseMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy
from yarl import URL

#: Buffered body bytes past which reading from the connection pauses (aiohttp's default).
READ_LIMIT = 2**16
#: Statuses whose answers have no body (RFC 9110 §15.3.5, §15.4.5), whatever their headers say.
_BODILESS = frozenset({204, 304})
#: Methods sent without ``Content-Length: 0`` when they have no body (as aiohttp does).
_NO_LENGTH_NEEDED = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Request headers set here, never copied from the caller's.
_SET_HERE = frozenset({"host", "content-length", "transfer-encoding"})
#: Control characters a request head may not carry (CR and LF are counted separately).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FLOW_CONTROL_ERRORS = (AttributeError, NotImplementedError, RuntimeError)

Body = bytes | bytearray | memoryview | AsyncIterable[bytes] | None


class UpstreamClosed(aiohttp.ServerDisconnectedError):
    """The connection closed (or was reset) before the answer's head was whole.

    ``reused``: it had served an answer before (it came from the pool); ``answered``: some
    bytes of this answer had arrived."""

    def __init__(self, message: str, *, reused: bool, answered: bool) -> None:
        super().__init__(message)
        self.reused = reused
        self.answered = answered


class ConnectFailed(aiohttp.ClientOSError):
    """No connection to the upstream could be made (refused, unreachable, TLS, DNS)."""


class ConnectTimeout(aiohttp.ConnectionTimeoutError):
    """No connection became available within ``connect_timeout`` (pool wait included)."""


class ReadTimeout(aiohttp.SocketTimeoutError):
    """Nothing arrived from the upstream for ``read_timeout`` while an answer was due."""


class InvalidAnswer(aiohttp.ClientError):
    """The upstream's bytes are not an HTTP/1.1 answer."""


class RequestBodyFailed(aiohttp.ClientConnectionError):
    """A streamed request body failed (its ``__cause__`` says why) before it was sent whole."""


class Response:
    """One upstream answer: ``status``, ``reason``, ``headers`` and ``content``, the body as
    it arrives. ``release()`` once done with it: its connection is back in the pool as soon
    as the body arrived whole, and releasing it before closes the connection."""

    __slots__ = ("_exchange", "content", "headers", "reason", "status")

    def __init__(
        self, message: RawResponseMessage, content: StreamReader, exchange: _Exchange | None
    ) -> None:
        self.status: int = message.code
        self.reason: str = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = content
        self._exchange: _Exchange | None = exchange

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return None if value is None else int(value)

    def release(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            exchange.release()

    async def read(self) -> bytes:
        """The whole body; the response is released afterwards."""
        try:
            return await self.content.read()
        finally:
            self.release()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        # Dropped unreleased mid-body: the connection must not stay out of the pool forever.
        if self._exchange is not None and not self._exchange.done:
            with contextlib.suppress(RuntimeError):  # the loop is gone: so is the pool
                self._exchange.release()


class UpstreamClient:
    """Requests to the service at ``url`` over at most ``pool_size`` connections (0: no
    bound), kept for reuse until idle for ``keepalive_timeout``. Getting a connection (the
    wait for a free one included) is bounded by ``connect_timeout``; an answer, from the
    end of the request to its head and then between body bytes, by ``read_timeout``
    (0: no bound)."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
    ) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        self.loop = asyncio.get_running_loop()
        self.read_timeout = read_timeout
        host = parsed.raw_host
        self._host = host
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)
        netloc = f"[{host}]" if ":" in host else host
        self._authority = netloc if parsed.is_default_port() else f"{netloc}:{self._port}"
        # Targets follow the URL's own path, as given (never re-quoted).
        self._prefix = parsed.raw_path.rstrip("/")
        self._ssl = ssl.create_default_context() if parsed.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._size = pool_size
        self._keepalive = keepalive_timeout
        #: Connections open or being opened: the pool's places taken.
        self._count = 0
        self._idle: deque[_Connection] = deque()
        #: Requests waiting for a place; each is given a connection, or ``None``: open one.
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._connections: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Body = None,
        *,
        fresh: bool = False,
    ) -> Response:
        """Send a request; return once its answer's head arrived (interim 1xx answers are
        skipped). ``target`` is sent as given. ``body``: bytes (written with the head, in one
        write), ``None``, or an async iterator of bytes, streamed as it comes with the
        ``Content-Length`` of ``headers`` if it has one, else chunked. ``fresh``: on a new
        connection, not a pooled one."""
        streamed = not (body is None or isinstance(body, bytes | bytearray | memoryview))
        length = _length(headers) if streamed else None
        head = self._head(method, target, headers, body, streamed, length)
        connection = None if fresh else self._take_idle()
        if connection is None:
            connection = await self._acquire(fresh)
        exchange = _Exchange(connection, method == "HEAD")
        try:
            if streamed:
                connection.write(head)
                exchange.stream(body, length)  # type: ignore[arg-type]
            else:
                connection.write(head + body if body else head)  # type: ignore[operator]
                exchange.sent()
            message, content = await exchange.answer
        except BaseException:
            exchange.abandon()
            raise
        return Response(message, content, exchange)

    async def close(self) -> None:
        """Close every connection, idle or busy; requests waiting for one fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._connections):
            connection.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(aiohttp.ClientConnectionError("upstream client closed"))

    @property
    def idle(self) -> int:
        """Pooled connections waiting for a request."""
        return len(self._idle)

    @property
    def open(self) -> int:
        """Connections open or being opened."""
        return self._count

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection (the pool is full)."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    # --- the request head ---------------------------------------------------------------

    def _head(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Body,
        streamed: bool,
        length: int | None,
    ) -> bytes:
        lines = [f"{method} {self._prefix}{target} HTTP/1.1", f"Host: {self._authority}"]
        given_length = False
        for name, value in headers.items():
            lowered = name.lower()
            if lowered in _SET_HERE:
                given_length = given_length or lowered == "content-length"
            else:
                lines.append(f"{name}: {value}")
        if streamed:
            chunked = length is None
            lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
        elif body or given_length or method not in _NO_LENGTH_NEEDED:
            lines.append(f"Content-Length: {len(body) if body else 0}")  # type: ignore[arg-type]
        text = "\r\n".join(lines) + "\r\n\r\n"
        # A CR or LF inside a name or value would start a line of its own: a header or a
        # request smuggled in.
        ends = len(lines) + 1
        if text.count("\n") != ends or text.count("\r") != ends or _CONTROL.search(text):
            raise ValueError("control character in the request line or a header")
        # Header values were decoded with surrogateescape: this gives back the bytes received.
        return text.encode("utf-8", "surrogateescape")

    # --- the pool -----------------------------------------------------------------------

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection (warm, the least likely to be closed by the
        service), unless requests are already waiting for one."""
        if not self._idle or self._waiters:
            return None
        connection = self._idle.pop()
        connection.pooled = False
        return connection

    async def _acquire(self, fresh: bool) -> _Connection:
        if self._closed:
            raise aiohttp.ClientConnectionError("upstream client closed")
        deadline = self.loop.time() + self._connect_timeout if self._connect_timeout else None
        if not self._waiters:
            if not self._size or self._count < self._size:
                self._count += 1
                return await self._connect(deadline)
            if fresh and self._idle:
                oldest = self._idle.popleft()
                oldest.pooled = False
                self._take_place_of(oldest)
                return await self._connect(deadline)
        while True:
            given = await self._wait_turn(deadline)
            if given is None:
                return await self._connect(deadline)
            if given.closed:
                continue  # closed on its way here; its place went on to the next in line
            if fresh:
                self._take_place_of(given)
                return await self._connect(deadline)
            return given

    async def _wait_turn(self, deadline: float | None) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                given = waiter.result()  # given, but this request is leaving: pass it on
                if given is None:
                    self._free_place()
                else:
                    self.put_back(given)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise self._connect_timed_out() from exc
            raise

    def _take_place_of(self, connection: _Connection) -> None:
        """Close ``connection`` and keep its place for a new one."""
        connection.counted = False
        connection.close()

    async def _connect(self, deadline: float | None) -> _Connection:
        """Open a connection in a place already taken (given back if this fails)."""
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except TimeoutError as exc:
            self._free_place()
            raise self._connect_timed_out() from exc
        except OSError as exc:
            self._free_place()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectFailed(
                exc.errno, f"cannot connect to {self._host}:{self._port}: {reason}"
            ) from exc
        except BaseException:
            self._free_place()
            raise
        if self._closed:
            connection.close()
            raise aiohttp.ClientConnectionError("upstream client closed")
        return connection

    def _connect_timed_out(self) -> ConnectTimeout:
        return ConnectTimeout(
            f"no connection to {self._host}:{self._port} within {self._connect_timeout:g}s"
        )

    def _free_place(self) -> None:
        """A place in the pool is free: the first waiter takes it, or it stays free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return  # the place passes to the waiter: the count stays
        self._count -= 1

    def put_back(self, connection: _Connection) -> None:
        """A connection whose answer ended cleanly: to the first waiter, or idle in the pool."""
        if self._closed or self._keepalive <= 0:
            connection.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = self.loop.time()
        connection.pooled = True
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(connection.idle_since + self._keepalive, self._sweep)

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection closed (by either side)."""
        self._connections.discard(connection)
        if connection.pooled:
            connection.pooled = False
            self._idle.remove(connection)
        if connection.counted:
            connection.counted = False
            self._free_place()

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_timeout``: the oldest, leftmost."""
        self._sweeper = None
        idle = self._idle
        expired = self.loop.time() - self._keepalive
        while idle and idle[0].idle_since <= expired:
            idle[0].close()  # (``forget`` takes it out of the deque)
        if idle:
            self._sweeper = self.loop.call_at(idle[0].idle_since + self._keepalive, self._sweep)


class _Connection(asyncio.Protocol):
    """One TCP connection to the upstream, serving one exchange at a time."""

    def __init__(self, client: UpstreamClient) -> None:
        self._client = client
        self._loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        #: Answers completed on it: a connection with any is a reused one.
        self.served = 0
        #: In the idle deque (since ``idle_since``, loop time).
        self.pooled = False
        self.idle_since = 0.0
        #: Holds a place in the pool (until ``forget``).
        self.counted = True
        self.closed = False
        self._read_paused = False
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        #: The answer timer: while ``_timing``, ``read_timeout`` without a byte fails it.
        self._timing = False
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.opened(self)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: this connection's framing can no longer be trusted.
            self.close()
            return
        self._last_read = self._loop.time()
        exchange.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._timing = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.lost(exc)
        self._client.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # --- used by the exchange -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None, "connection closed"
        self.transport.write(data)

    async def writable(self) -> None:
        """Return once the transport takes more bytes (at once unless it is paused)."""
        if self._write_paused and not self.closed:
            if self._writable is None:
                self._writable = self._loop.create_future()
            await self._writable

    def finish(self, exchange: _Exchange, reusable: bool) -> None:
        """``exchange`` is over: the connection serves the next one, or closes."""
        if self.exchange is not exchange:
            return
        self.exchange = None
        self._timing = False
        if not reusable or self.closed:
            self.close()
            return
        self.served += 1
        self.resume_reading()
        self._client.put_back(self)

    def close(self) -> None:
        """Close (what is written is still sent); its place in the pool is free at once."""
        self._end_exchange()
        if self.transport is not None:
            self.transport.close()
        self._client.forget(self)

    def abort(self) -> None:
        """Close at once, dropping what is not sent yet."""
        self._end_exchange()
        if self.transport is not None:
            self.transport.abort()
        self._client.forget(self)

    def _end_exchange(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.done:
            exchange.fail(aiohttp.ClientConnectionError("upstream connection closed"))

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self._timing = False  # a reader that stops reading is not a slow upstream
            with contextlib.suppress(*_FLOW_CONTROL_ERRORS):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            with contextlib.suppress(*_FLOW_CONTROL_ERRORS):
                self.transport.resume_reading()
            if self.exchange is not None and self.exchange.sent_whole:
                self.start_timer()

    # --- the answer timer ---------------------------------------------------------------

    def start_timer(self) -> None:
        """From now on ``read_timeout`` without a byte fails the exchange. One timer per
        connection, moved lazily: arriving bytes only note the time."""
        timeout = self._client.read_timeout
        if timeout <= 0:
            return
        self._timing = True
        self._last_read = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_read + timeout, self._check_timer)

    def _check_timer(self) -> None:
        self._timer = None
        exchange = self.exchange
        if not self._timing or exchange is None:
            return
        timeout = self._client.read_timeout
        due = self._last_read + timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_timer)
            return
        exchange.fail(ReadTimeout(f"no data from the upstream for {timeout:g}s"))
        self.abort()


class _Flow:
    """What an answer's body (a ``StreamReader``) asks of its protocol: to pause and resume
    reading, which reaches the connection only while the answer is still the one on it.

    Apart from the exchange, so that no object of a request refers back to another that
    refers to it: a request's objects are freed when the last reference goes, without the
    cyclic garbage collector (whose full passes scan the whole heap, L1 included)."""

    __slots__ = ("connection",)

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    @property
    def connected(self) -> bool:
        # A body always ends (EOF or an exception) before its reader could wait on a
        # closed connection.
        return True

    def pause_reading(self) -> None:
        exchange = self.connection.exchange
        if exchange is not None and exchange.flow is self:
            self.connection.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        exchange = self.connection.exchange
        if exchange is not None and exchange.flow is self:
            self.connection.resume_reading()


class _Exchange:
    """One request and its answer on one connection."""

    __slots__ = (
        "_early",
        "_keep_alive",
        "_writer",
        "answer",
        "answered",
        "connection",
        "content",
        "done",
        "flow",
        "head_only",
        "parser",
        "reused",
        "sent_whole",
    )

    def __init__(self, connection: _Connection, head_only: bool) -> None:
        self.connection = connection
        connection.exchange = self
        self.head_only = head_only
        self.reused = connection.served > 0
        loop = connection._loop
        self.flow = _Flow(connection)
        self.parser = _parser(self.flow, loop, head_only)
        #: The answer's head and body (the ``Response`` is made of them by the request).
        self.answer: asyncio.Future[tuple[RawResponseMessage, StreamReader]] = loop.create_future()
        #: The answer's body, once its head arrived.
        self.content: StreamReader | None = None
        #: Some bytes of the answer arrived.
        self.answered = False
        #: The answer ended (whole, or failed): nothing more is read for it.
        self.done = False
        #: The request is written whole.
        self.sent_whole = False
        self._keep_alive = True
        self._writer: asyncio.Task[None] | None = None
        #: The reads since the last message parsed, while no final head is whole: what
        #: ``_replay`` parses again.
        self._early: tuple[bytes, ...] = ()

    # --- sending ------------------------------------------------------------------------

    def sent(self) -> None:
        """The whole request is written: the answer is due from now."""
        self.sent_whole = True
        if self.done:
            self.connection.finish(self, self._keep_alive)
        elif self.connection.exchange is self:
            self.connection.start_timer()

    def stream(self, body: AsyncIterable[bytes], length: int | None) -> None:
        self._writer = asyncio.ensure_future(self._write_body(body, length))

    async def _write_body(self, body: AsyncIterable[bytes], length: int | None) -> None:
        connection = self.connection
        written = 0
        try:
            async for chunk in body:
                if connection.exchange is not self:
                    return  # answered early, failed or abandoned: nobody reads the rest
                if not chunk:
                    continue
                written += len(chunk)
                if length is None:
                    connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    connection.write(chunk)
                await connection.writable()
            if connection.exchange is not self:
                return
            if length is None:
                connection.write(b"0\r\n\r\n")
            elif written != length:
                raise ValueError(f"{written} bytes, {length} announced")
        except Exception as exc:
            # The body failed (its client went away, or stopped sending): the request cannot
            # be completed, and the caller gets that instead of an answer, as from aiohttp.
            if connection.exchange is self:
                error = RequestBodyFailed(f"request body not sent whole: {exc!r}")
                error.__cause__ = exc
                self.fail(error)
                connection.abort()
            return
        self.sent()

    # --- receiving ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.answered = True
        try:
            messages, upgraded, _ = self.parser.feed_data(data)
        except HttpProcessingError as exc:
            self._invalid(data, exc)
            return
        for message, payload in messages:
            self._message(message, payload, upgraded)
        # Handed on only now that the whole read is parsed: bytes after the answer's end can
        # still make its connection unfit for reuse.
        if self.done:
            self._hand_on()
        elif self.content is None:
            self._early = (data,) if messages else (*self._early, data)

    def _message(self, message: RawResponseMessage, payload: StreamReader, upgraded: bool) -> None:
        code = message.code
        if _interim(code):
            return  # the final answer follows
        if self.content is not None:
            # A second answer to one request: this connection's framing is lost.
            self._keep_alive = False
            return
        if message.should_close or upgraded:
            self._keep_alive = False
        bodiless = code in _BODILESS or code == 101 or self.head_only
        content = EMPTY_PAYLOAD if bodiless else payload
        self.content = content
        if not self.answer.done():
            self.answer.set_result((message, content))
        if payload.is_eof():
            self.done = True
        else:
            payload.on_eof(self._ended)

    def _ended(self) -> None:
        """The answer's last byte arrived (the parser is mid-read: see ``feed``)."""
        self.done = True

    def _hand_on(self) -> None:
        """The answer ended: its connection serves the next request, or closes."""
        if self.sent_whole:
            self.connection.finish(self, self._keep_alive)
        else:
            # Answered before the request was whole: the service may not read the rest.
            self._stop_writer()
            self.connection.finish(self, False)

    def _invalid(self, data: bytes, exc: HttpProcessingError) -> None:
        """The parser failed on ``data``. When the answer had ended whole before (its
        announced length, its last chunk), what follows it is no answer to anything (RFC 9112
        §6.3): the answer stands, and its connection, whose framing is lost, closes (as
        nginx does). Otherwise the answer itself is invalid."""
        if self.done or (self.content is None and self._replay(b"".join((*self._early, data)))):
            self._keep_alive = False
            self._hand_on()
            return
        self.fail(InvalidAnswer(f"invalid answer from the upstream: {exc.message}"))
        self.connection.abort()

    def _replay(self, received: bytes) -> bool:
        """Parse ``received`` again with a fresh parser, each head fed on its own. Given a
        head and what follows it in one call, the parser raises on bytes after the answer
        without handing over the answer it completed; fed the head alone, it hands it over
        first. True when the final answer is then whole: it is this exchange's."""
        parser = _parser(self.flow, self.connection._loop, self.head_only)
        messages: list[tuple[RawResponseMessage, StreamReader]] = []
        start = 0
        with contextlib.suppress(HttpProcessingError):
            while not messages or _interim(messages[-1][0].code):
                end = received.find(b"\r\n\r\n", start) + 4
                if end < 4:
                    break
                messages += parser.feed_data(received[start:end])[0]
                start = end
            else:
                parser.feed_data(received[start:])  # the body, then what follows it
        if not messages or _interim(messages[-1][0].code) or not messages[-1][1].is_eof():
            return False
        self.parser = parser
        for message, payload in messages:
            self._message(message, payload, False)
        return True

    def lost(self, exc: Exception | None) -> None:
        """The connection closed while this exchange was on it."""
        if self.content is None:
            reason = f"upstream closed the connection: {exc!r}" if exc else "upstream closed"
            error = UpstreamClosed(reason, reused=self.reused, answered=self.answered)
            error.__cause__ = exc
            self.fail(error)
            return
        try:
            self.parser.feed_eof()  # ends a body that lasts until the connection closes
        except HttpProcessingError as error:
            self.fail(aiohttp.ClientPayloadError(f"upstream body cut short: {error.message}"))
            return
        if self.done:
            self._stop_writer()  # answered before the request was whole: not read
        else:
            self.fail(aiohttp.ClientPayloadError("upstream closed the connection mid-body"))

    def fail(self, exc: BaseException) -> None:
        """The exchange cannot go on: whoever waits for the answer or its body gets ``exc``."""
        self.done = True
        self._stop_writer()
        content = self.content
        if content is None:
            if not self.answer.done():
                self.answer.set_exception(exc)
            return
        if not content.is_eof() and content.exception() is None:
            content.set_exception(exc)

    def release(self) -> None:
        """Its response is let go: before the body ended, the connection cannot be reused."""
        if not self.done:
            self.abandon()

    def abandon(self) -> None:
        """Stop here: the connection, in a state nobody can tell, closes."""
        self.done = True
        self._stop_writer()
        if self.connection.exchange is self:
            self.connection.close()
        if not self.answer.done():
            self.answer.cancel()

    def _stop_writer(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()


def _parser(flow: _Flow, loop: asyncio.AbstractEventLoop, head_only: bool) -> HttpResponseParser:
    """aiohttp's response parser, for one answer (``head_only``: to a ``HEAD``)."""
    return HttpResponseParser(
        flow,
        loop,
        READ_LIMIT,
        payload_exception=aiohttp.ClientPayloadError,
        response_with_body=not head_only,
        read_until_eof=True,
        auto_decompress=False,
    )


def _interim(code: int) -> bool:
    """An interim answer (RFC 9110 §15.2): the final one follows; ``101`` is final here."""
    return 100 <= code < 200 and code != 101


def _length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` of a streamed body, when the caller gave one."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"invalid Content-Length: {value!r}")
    return int(value)
