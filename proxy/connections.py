"""Bounds on the proxy port's client connections, kept by both of its front ends (the fast
path, ``proxy/fastpath.py``, and aiohttp's protocol once a connection is handed over):

- how many are open at once (``server.max_connections``): one more gets a short 503;
- how long one may sit with no request under way (``server.idle_timeout``);
- how long a request head may take to arrive, counted from its first byte
  (``server.header_timeout``); and on the fast path, which buffers the body of a request it
  may answer itself, how long it waits for that body (``server.body_timeout``) before it
  leaves the request to the handler, which bounds bodies itself;

and how requests aiohttp's parser refuses are answered (400), counted and logged: at most one
line a second and no traceback, since a client controls how many it sends.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from core.config import ServerConfig
from core.metrics import Metrics

log = logging.getLogger(__name__)

#: Why a bound closed a connection: the ``reason`` label of ``connections_closed``.
IDLE = "idle_timeout"
HEAD = "header_timeout"
BODY = "body_timeout"
FULL = "max_connections"

_REFUSAL_TEXT = b"too many connections\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_TEXT), _REFUSAL_TEXT)
)
#: A refused connection is kept this long at most to read what its client sent (see
#: ``RefusedConnection``).
REFUSAL_LINGER = 1.0
#: One log line at most this often about malformed requests.
MALFORMED_LOG_INTERVAL = 1.0


def automatic_max_connections() -> int:
    """Three quarters of the open-files soft limit: the rest stays for the upstream pool,
    Redis, PostgreSQL and the admin port, so a flood of clients cannot starve them."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, soft * 3 // 4)


class ConnectionLimits:
    """The bounds of one proxy port and the count of its open connections."""

    def __init__(self, server: ServerConfig, metrics: Metrics) -> None:
        self.header_timeout = server.header_timeout
        self.idle_timeout = server.idle_timeout
        self.body_timeout = server.body_timeout
        self.max_connections = server.max_connections or automatic_max_connections()
        self.open = 0
        self.malformed = MalformedRequests(metrics)
        closed = metrics.connections_closed
        self._closed = {reason: closed.labels(reason) for reason in (IDLE, HEAD, BODY, FULL)}

    def admit(self) -> bool:
        """Count a new connection in; ``False`` (and the refusal counted) at the bound."""
        if self.open >= self.max_connections:
            self._closed[FULL].inc()
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def closed(self, reason: str) -> None:
        self._closed[reason].inc()


class MalformedRequests:
    """Counts requests the parser refused and logs them, one line a second at most."""

    def __init__(self, metrics: Metrics) -> None:
        self._counter = metrics.malformed_requests
        self._next_line = 0.0
        self._unlogged = 0

    def refused(self, peer: str | None, exc: HttpProcessingError) -> None:
        self._counter.inc()
        now = time.monotonic()
        if now < self._next_line:
            self._unlogged += 1
            return
        self._next_line = now + MALFORMED_LOG_INTERVAL
        unlogged, self._unlogged = self._unlogged, 0
        reason = exc.message.partition("\n")[0][:200]
        log.warning(
            "malformed request from %s answered 400: %s %r (%d more since the last line)",
            peer,
            type(exc).__name__,
            reason,
            unlogged,
        )


class Deadline:
    """The one bound a connection is under at a time: idle, head, body, or none while a
    request is being answered. When it passes, ``on_expiry`` gets the bound's reason.

    It moves on every request, so it moves cheaply: one timer, re-armed only when the
    deadline comes earlier than the timer; when the timer finds the deadline moved later, it
    sets itself again (aiohttp's keep-alive timer does the same)."""

    __slots__ = ("_at", "_limits", "_loop", "_on_expiry", "_timer", "_timer_at", "reason")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: ConnectionLimits,
        on_expiry: Callable[[str], None],
    ) -> None:
        self._loop = loop
        self._limits = limits
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._at = 0.0
        #: The bound now running (``IDLE``, ``HEAD``, ``BODY``), or ``None``.
        self.reason: str | None = None

    def idle(self, since: float) -> None:
        self._set(IDLE, since + self._limits.idle_timeout)

    def head(self, since: float) -> None:
        self._set(HEAD, since + self._limits.header_timeout)

    def body(self, since: float) -> None:
        self._set(BODY, since + self._limits.body_timeout)

    def pause(self) -> None:
        """A request is being answered: no bound until the next ``idle`` (the handler bounds
        what it waits for itself)."""
        self.reason = None

    def cancel(self) -> None:
        self.reason = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _set(self, reason: str, at: float) -> None:
        self.reason, self._at = reason, at
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        reason = self.reason
        if reason is None:
            return
        if self._loop.time() < self._at:
            self._timer_at = self._at
            self._timer = self._loop.call_at(self._at, self._fire)
            return
        self.reason = None
        self._on_expiry(reason)


class RefusedConnection(asyncio.Protocol):
    """A connection over ``max_connections``: it gets a short 503 and is closed.

    The 503 is followed by our end of the stream at once; the socket itself stays until the
    client closes its end (or ``REFUSAL_LINGER`` passes), reading and dropping what the
    client sent, because closing a socket with unread bytes resets it, and a reset can reach
    the client before it has read the 503."""

    def __init__(self) -> None:
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()


class BoundedRequestHandler(RequestHandler):
    """aiohttp's protocol, for a connection the fast path handed over, under the same bounds:
    the idle and head deadlines run while no request is being handled (aiohttp's own
    keep-alive timer stays behind them as a backstop), and a request its parser refuses is
    answered 400 as aiohttp answers it, but counted and logged by ``MalformedRequests``
    instead of with a traceback per request.

    A request is under way from when the server's request factory builds it
    (``request_started``) until its answer is finished (``finish_response``) and its body
    read. Bytes of a next head that arrive while one is under way start no clock; the idle
    deadline, which starts then, bounds them."""

    __slots__ = ("_deadline", "_limits", "_open", "_time")

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        backstop = limits.idle_timeout + limits.header_timeout + 1.0
        super().__init__(manager, **{**kwargs, "keepalive_timeout": backstop})
        loop: asyncio.AbstractEventLoop = kwargs["loop"]
        self._time = loop.time
        self._limits = limits
        self._deadline = Deadline(loop, limits, self._expired)
        self._open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._open = True  # counted in by the fast path, which saw the connection first
        super().connection_made(transport)
        self._deadline.idle(self._time())

    def connection_lost(self, exc: BaseException | None) -> None:
        self._deadline.cancel()
        if self._open:
            self._open = False
            self._limits.release()
        super().connection_lost(exc)

    def continue_from(self, buffered: bytes, head_started: float | None) -> None:
        """Go on from the fast path with the bytes it did not answer; ``head_started`` is
        when the first of them arrived (loop time), if they do not hold a whole head."""
        if head_started is not None:
            self._deadline.head(head_started)
        self.data_received(buffered)

    def data_received(self, data: bytes) -> None:
        if data and self._deadline.reason == IDLE:
            self._deadline.head(self._time())
        super().data_received(data)

    def request_started(self) -> None:
        self._deadline.pause()

    def _expired(self, reason: str) -> None:
        self._limits.closed(reason)
        self.force_close()

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if request.content.is_eof():
                self._idle()
            else:  # aiohttp first reads the rest of the body (lingering_time), not a head
                request.content.on_eof(self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self._deadline.idle(self._time())

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        self._limits.malformed.refused(request.remote, exc)
        # The answer aiohttp's handle_error gives a request its parser refused.
        response = web.Response(status=status, text=message, content_type="text/plain")
        response.force_close()
        return response
