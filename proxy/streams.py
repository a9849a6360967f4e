"""One upstream event stream for every identical request: a live tee.

An answer that streams (an LLM completion with ``stream: true``, an MCP answer as SSE) takes
seconds to arrive. A tee reads it from the upstream in a task of its own, whatever its
clients do, and records it: the client that opened it and every identical request that
arrives meanwhile (they *join*) get the chunks already sent at once and the rest as they
arrive. When the upstream's stream has ended the tee asks its ``judge`` (the route's mode)
whether the recorded events form a complete answer, and if so hands the recording to
``store``. An upstream stream that breaks off ends every client's stream with an error and
stores nothing; a client that goes away only stops its own copy.

Who may join is the caller's rule (``StreamTees`` is keyed by what the engine keys requests
with: the cache key, tenant partition included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from core.sse import Event, EventReader
from core.tasks import TaskSet
from proxy.upstream_client import Response

log = logging.getLogger(__name__)

Judge = Callable[[list[Event], bytes], "str | None"]


class StreamBroken(aiohttp.ClientPayloadError):
    """The upstream's stream broke off before its end (what the front ends cut a client's
    connection for, as they do for a relayed stream that breaks)."""


class StreamTee:
    """One upstream answer being relayed to every client that joined it (see the module).

    Chunks are kept while anyone may still join; once the recording passes ``limit`` bytes
    nothing more joins, nothing is stored, and chunks every client has sent are dropped."""

    def __init__(
        self,
        response: Response,
        prefix: bytes,
        *,
        limit: int,
        judge: Judge,
        store: Callable[[bytes], Any],
    ) -> None:
        self.status = response.status
        self.reason = response.reason
        self.headers: CIMultiDictProxy[str] = response.headers
        self._response = response
        self._limit = limit
        self._judge = judge
        self._store = store
        self._reader = EventReader()
        self._events: list[Event] = []
        #: The recording: ``_chunks[i]`` is chunk number ``_base + i``.
        self._chunks: list[bytes] = []
        self._base = 0
        self._size = 0
        self._readers: set[TeeReader] = set()
        self._joined = False
        self._arrived = asyncio.Event()
        self.ended = False
        self.broken: BaseException | None = None
        self.stored = False
        if prefix:
            self._append(prefix)

    @property
    def joinable(self) -> bool:
        """Whether an identical request should join (rather than make its own call): the
        stream is whole from its first byte and has not broken off."""
        return self._base == 0 and self.broken is None

    def join(self, on_first_chunk: Callable[[], Any] | None = None) -> TeeReader | None:
        """A copy of the stream for one more client (``None``: its first chunks are gone).
        The first client can always join: nothing is dropped before it has."""
        if self._base > 0:
            return None
        reader = TeeReader(self, on_first_chunk)
        self._readers.add(reader)
        self._joined = True
        return reader

    async def run(self) -> None:
        """Read the upstream's stream to its end; then judge, and store what is complete."""
        try:
            async for chunk in self._response.content.iter_any():
                self._append(chunk)
        except (aiohttp.ClientError, TimeoutError, asyncio.CancelledError) as exc:
            self._break(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("upstream stream broke off: %r", exc)
            return
        finally:
            self._response.release()
        self.ended = True
        self._wake()
        reason = (
            "too big"
            if self._size > self._limit
            else self._judge(self._events, self._reader.pending)
        )
        if reason is not None:
            log.debug("not storing a streamed answer: %s", reason)
            return
        self._store(b"".join(self._chunks))
        self.stored = True

    async def read(self, reader: TeeReader) -> bytes:
        """The chunks past ``reader``'s position, waiting for some; ``b""`` at the end."""
        while True:
            index = reader.position - self._base
            if index < len(self._chunks):
                data = b"".join(self._chunks[index:])
                reader.position = self._base + len(self._chunks)
                self._trim()
                return data
            if self.broken is not None:
                raise StreamBroken("upstream stream broke off") from self.broken
            if self.ended:
                return b""
            await self._arrived.wait()

    def leave(self, reader: TeeReader) -> None:
        self._readers.discard(reader)
        self._trim()

    def _append(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._chunks.append(chunk)
        if self._size <= self._limit:
            self._events += self._reader.feed(chunk)
        self._trim()
        self._wake()

    def _break(self, exc: BaseException) -> None:
        self.broken = exc
        self._wake()

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()

    def _trim(self) -> None:
        """Past ``limit``: drop the chunks every client has been given."""
        if self._size <= self._limit or not self._joined:
            return
        sent = min((r.position for r in self._readers), default=self._base + len(self._chunks))
        if sent > self._base:
            del self._chunks[: sent - self._base]
            self._base = sent


class TeeReader:
    """One client's copy of a tee's stream. It offers what the front ends relay from an
    upstream answer (``status``, ``reason``, ``content.iter_any()``, ``content_length``,
    ``release()``), so they relay it chunk by chunk as they relay any stream."""

    content_length = None

    def __init__(self, tee: StreamTee, on_first_chunk: Callable[[], Any] | None) -> None:
        self._tee = tee
        self._on_first_chunk = on_first_chunk
        self.position = 0
        self.status = tee.status
        self.reason = tee.reason
        self.content = self

    async def iter_any(self) -> AsyncIterator[bytes]:
        while data := await self._tee.read(self):
            if self._on_first_chunk is not None:
                self._on_first_chunk()
                self._on_first_chunk = None
            yield data

    def release(self) -> None:
        """This client is done (or gone): the others go on."""
        self._tee.leave(self)


class StreamTees:
    """The tees under way, by the key of the requests that may join them."""

    def __init__(self, tasks: TaskSet) -> None:
        self._tasks = tasks
        self._live: dict[str, StreamTee] = {}

    def __len__(self) -> int:
        return len(self._live)

    def start(self, key: str, tee: StreamTee) -> None:
        """Run ``tee`` (in the background: no client's departure stops it) under ``key``."""
        self._live[key] = tee
        task = self._tasks.spawn(tee.run())
        task.add_done_callback(lambda _: self._forget(key, tee))

    def live(self, key: str) -> StreamTee | None:
        """A tee under ``key`` that a new client can still join from its first byte."""
        tee = self._live.get(key)
        return tee if tee is not None and tee.joinable and not tee.ended else None

    def _forget(self, key: str, tee: StreamTee) -> None:
        if self._live.get(key) is tee:
            del self._live[key]
