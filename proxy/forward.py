"""Talking to the upstream: one pool of keep-alive connections (``proxy/upstream_client.py``)
for all traffic, with the replay rule, the bound on requests in flight and the metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from core.config import UpstreamConfig
from core.errors import UpstreamTimeout, UpstreamUnreachable
from core.headers import end_to_end
from core.limits import UpstreamLimiter
from core.metrics import Metrics
from core.policy import is_event_stream
from proxy.upstream_client import Response, UpstreamClient, UpstreamClosed

log = logging.getLogger(__name__)

#: How long the upstream took to answer the current request (for its access log line).
UPSTREAM_SECONDS: ContextVar[float | None] = ContextVar("upstream_seconds", default=None)

#: Methods whose intended effect is the same however often a request is applied (RFC 9110
#: §9.2.2): a pass-through request with one of them may be sent again after a connection
#: failure. Other pass-through requests never are.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: An idempotent pass-through request's body up to this size is read whole before it is
#: sent, so that it can be sent again; a longer (or chunked) one is streamed, never replayed.
REPLAY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Buffered:
    """An upstream answer read whole (small enough to cache or share)."""

    status: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str]
    body: bytes
    #: Filled in by the caller: whether the answer went into the cache, and whether it
    #: came from revalidating a stored entry (a 304 upstream).
    stored: bool = False
    revalidated: bool = False
    #: Time to the upstream's response headers (the fetch may run in a single-flight task,
    #: whose context the waiting requests do not see).
    upstream_seconds: float | None = None


@dataclass(slots=True)
class Streaming:
    """An upstream answer too big (or too endless) to buffer: streamed to one client.

    ``prefix`` holds the bytes already read while finding that out."""

    response: Response
    prefix: bytes


class Upstream:
    """The service behind the proxy. Raises ``UpstreamUnreachable`` / ``UpstreamTimeout``."""

    def __init__(self, config: UpstreamConfig, limiter: UpstreamLimiter, metrics: Metrics) -> None:
        self._config = config
        self._limiter = limiter
        self._metrics = metrics
        self._client: UpstreamClient | None = None
        self._durations: dict[str, Any] = {}  # each route's histogram child, looked up once

    async def start(self) -> None:
        # Bodies pass through as the upstream encoded them, and no header the client did
        # not send is invented (the client sends only Host and the body's framing).
        self._client = UpstreamClient(
            self._config.url,
            pool_size=self._config.pool_size,
            connect_timeout=self._config.connect_timeout,
            read_timeout=self._config.timeout,
            keepalive_timeout=self._config.keepalive_timeout,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def open(
        self, route: str, method: str, path_qs: str, headers: CIMultiDict[str], body: Any
    ) -> Response:
        """Send a request and return once the response headers arrived. The upstream slot
        is held until then: a long stream does not count against the bound.

        ``body`` is ``None``, bytes or an async iterator of bytes (streamed as it comes).
        Only a request with an idempotent method and no streamed body is replayed after a
        stale connection."""
        held = await self._limiter.acquire(route)
        try:
            replayable = method in IDEMPOTENT_METHODS and not isinstance(body, AsyncIterable)
            return await self._send(route, method, path_qs, headers, body, replayable)
        finally:
            self._limiter.release(held)

    async def _send(
        self,
        route: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: Any,
        replayable: bool,
    ) -> Response:
        started = time.perf_counter()
        try:
            response = await self._request(route, method, path_qs, headers, body, replayable)
        except TimeoutError as exc:
            self._metrics.upstream_errors.labels(route, "timeout").inc()
            raise UpstreamTimeout(f"no answer within {self._config.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            self._metrics.upstream_errors.labels(route, "unreachable").inc()
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc
        elapsed = time.perf_counter() - started
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = self._metrics.upstream_duration.labels(route)
        duration.observe(elapsed)
        UPSTREAM_SECONDS.set(elapsed)
        if response.status >= 500:  # an answer, but a failed one: it counts as an error
            self._metrics.upstream_errors.labels(route, "server_error").inc()
        return response

    async def _request(
        self,
        route: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: Any,
        replayable: bool,
    ) -> Response:
        """Send on a pooled connection. When a reused one turns out closed by the service
        before any answer byte (its keep-alive ran out while the request was on its way),
        send a ``replayable`` request once more on a fresh connection: never another pooled
        one, as the pool may hold more connections the service has closed (all of them,
        after a restart). The target is sent verbatim: the cache key is made of it."""
        assert self._client is not None, "start() not awaited"
        try:
            return await self._client.request(method, path_qs, headers, body)
        except UpstreamClosed as exc:
            if not (replayable and exc.reused and not exc.answered):
                raise
        self._metrics.upstream_retries.labels(route).inc()
        log.debug("%s %s: pooled connection was closed by the upstream; sent again", method, route)
        return await self._client.request(method, path_qs, headers, body, fresh=True)

    async def fetch(
        self,
        route: str,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes,
        max_size: int,
    ) -> Buffered | Streaming:
        """Send a request and read the answer whole when it is at most ``max_size`` bytes and
        not an event stream; otherwise hand it back for streaming."""
        held = await self._limiter.acquire(route)
        try:
            # A cacheable route's request is a read, and its body is bytes at hand: it is
            # always safe to send again, whatever the method.
            response = await self._send(route, method, path_qs, headers, body or None, True)
            return await self.read_answer(response, max_size)
        finally:
            self._limiter.release(held)

    async def read_answer(self, response: Response, max_size: int) -> Buffered | Streaming:
        try:
            length = response.content_length
            if is_event_stream(response.headers) or (length is not None and length > max_size):
                return Streaming(response, b"")
            prefix = await self._read_up_to(response, max_size + 1)
            if len(prefix) > max_size:
                return Streaming(response, prefix)
        except BaseException:
            response.release()
            raise
        response.release()
        return Buffered(
            response.status,
            end_to_end(response.headers),
            prefix,
            upstream_seconds=UPSTREAM_SECONDS.get(),
        )

    async def _read_up_to(self, response: Response, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                chunk = await response.content.read(limit - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream stopped sending the body") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"upstream body: {exc}") from exc
        return b"".join(chunks)
