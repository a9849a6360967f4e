"""Talking to the upstream: one pooled keep-alive ``ClientSession`` for all traffic."""

from __future__ import annotations

import time
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

#: How long the upstream took to answer the current request (for its access log line).
UPSTREAM_SECONDS: ContextVar[float | None] = ContextVar("upstream_seconds", default=None)


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

    response: aiohttp.ClientResponse
    prefix: bytes


class Upstream:
    """The service behind the proxy. Raises ``UpstreamUnreachable`` / ``UpstreamTimeout``."""

    def __init__(self, config: UpstreamConfig, limiter: UpstreamLimiter, metrics: Metrics) -> None:
        self._config = config
        self._limiter = limiter
        self._base = config.url.rstrip("/")
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._config.pool_size,
            keepalive_timeout=self._config.keepalive_timeout,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self._config.connect_timeout,
                sock_read=self._config.timeout,
            ),
            # Bodies pass through as the upstream encoded them; no headers the client did
            # not send are invented.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(
        self, route: str, method: str, path_qs: str, headers: CIMultiDict[str], body: Any
    ) -> aiohttp.ClientResponse:
        """Send a request and return once the response headers arrived. The upstream slot
        is held until then: a long stream does not count against the bound."""
        held = await self._limiter.acquire(route)
        try:
            return await self._send(route, method, path_qs, headers, body)
        finally:
            self._limiter.release(held)

    async def _send(
        self, route: str, method: str, path_qs: str, headers: CIMultiDict[str], body: Any
    ) -> aiohttp.ClientResponse:
        assert self._session is not None, "Upstream.start() was not awaited"
        started = time.perf_counter()
        try:
            response = await self._session.request(
                method,
                self._base + path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=False,
            )
        except TimeoutError as exc:
            self._metrics.upstream_errors.labels(route, "timeout").inc()
            raise UpstreamTimeout(f"no answer within {self._config.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            self._metrics.upstream_errors.labels(route, "unreachable").inc()
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc
        elapsed = time.perf_counter() - started
        self._metrics.upstream_duration.labels(route).observe(elapsed)
        UPSTREAM_SECONDS.set(elapsed)
        if response.status >= 500:  # an answer, but a failed one: it counts as an error
            self._metrics.upstream_errors.labels(route, "server_error").inc()
        return response

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
            response = await self._send(route, method, path_qs, headers, body or None)
            return await self.read_answer(response, max_size)
        finally:
            self._limiter.release(held)

    async def read_answer(
        self, response: aiohttp.ClientResponse, max_size: int
    ) -> Buffered | Streaming:
        try:
            length = response.content_length
            is_stream = "text/event-stream" in response.headers.get("Content-Type", "")
            if is_stream or (length is not None and length > max_size):
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

    async def _read_up_to(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
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
