"""The values that travel between a front end and the engine: one ``Request`` in, one
``Reply`` out. Neither knows which front end read the request or will write the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict, MultiMapping

from core.config import RouteConfig
from core.entry import CachedResponse
from core.headers import Target
from core.keys import RequestKey
from core.outcome import Outcome
from proxy.upstream_client import Response


class BodyTimeout(Exception):
    """The client did not send its request body within ``server.body_timeout``."""


class Body(Protocol):
    """A request body as the front end received it."""

    #: Its declared length; ``None`` when unknown (chunked).
    length: int | None
    #: The whole body when the front end already holds it, else ``None``.
    whole: bytes | None

    async def read(self) -> bytes:
        """The whole body (raises ``BodyTimeout``)."""
        ...

    def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives (raises ``BodyTimeout`` on a long pause)."""
        ...


class NoBody:
    """A request without a body."""

    length: int | None = 0
    whole: bytes | None = b""

    async def read(self) -> bytes:
        return b""

    async def stream(self) -> AsyncIterator[bytes]:
        return
        yield  # an async generator that yields nothing


NO_BODY = NoBody()


@dataclass(slots=True)
class BufferedBody:
    """A body the front end already holds whole."""

    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def whole(self) -> bytes:
        return self.data

    async def read(self) -> bytes:
        return self.data

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.data


@dataclass(slots=True)
class StreamBody:
    """A body read from aiohttp's payload stream, bounded by ``timeout``: whole within it,
    or with no pause longer than it when streamed."""

    content: aiohttp.StreamReader
    length: int | None
    timeout: float
    whole: bytes | None = None

    async def read(self) -> bytes:
        chunks = []
        try:
            async with asyncio.timeout(self.timeout):
                while chunk := await self.content.readany():
                    chunks.append(chunk)
        except TimeoutError:
            raise BodyTimeout from None
        return b"".join(chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await asyncio.wait_for(self.content.readany(), self.timeout)
            except TimeoutError:
                raise BodyTimeout from None
            if not chunk:
                return
            yield chunk


@dataclass(frozen=True, slots=True)
class Keyed:
    """A request the fast front end has already matched, decided (an ordinary lookup on a
    ``json`` route) and keyed, under the route's purge ``generation`` of that moment."""

    route: RouteConfig
    key: RequestKey
    generation: int
    target: Target


@dataclass(slots=True)
class Request:
    """One client request, as every step of the engine sees it."""

    method: str
    #: The decoded path routes are matched against.
    path: str
    target: Target
    headers: MultiMapping[str]
    #: The client's address.
    peer: str
    body: Body = NO_BODY
    #: What the fast front end found out already: the engine does not do it again.
    keyed: Keyed | None = None


class Relayed(Protocol):
    """An answer a front end relays as it arrives: an upstream ``Response``, or one client's
    copy of a shared stream (``proxy.streams.TeeReader``)."""

    reason: str
    content: Any  # offers ``iter_any()``
    content_length: int | None

    def release(self) -> None: ...


@dataclass(slots=True)
class Reply:
    """What to send back: a status, headers and either ``body`` or an upstream ``stream`` to
    relay (``prefix`` holds the bytes of it already read). ``outcome`` says how it came about;
    ``close``: the connection ends after it."""

    status: int
    headers: CIMultiDict[str]
    outcome: Outcome
    body: bytes = b""
    stream: Response | Relayed | None = None
    prefix: bytes = b""
    close: bool = False
    #: Route name for the metrics and the access log.
    route: str = field(default="none")
    #: The stored entry this reply replays as it is stored, only ``Cache-Status`` and
    #: ``Age`` added (``headers`` holds the same): a front end may write the entry's
    #: serialised head and those two instead of serialising ``headers``.
    replays: CachedResponse | None = None
