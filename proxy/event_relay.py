"""An upstream event stream relayed to one client as it arrives, read on the way.

Each event is handed to ``on_event`` once its bytes are read and before they are written
on: an MCP route drops the entries a change notification makes stale before the client can
act on it, and stores a result from the stream's final response. It quacks like the
upstream ``Response`` the front ends relay (``content.iter_any()``, ``release()``), so no
front end knows it is there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from core.sse import Event, EventReader
from proxy.upstream_client import Response


class EventRelay:
    """``response`` (whose first ``prefix`` bytes were already read), read for events."""

    def __init__(
        self, response: Response, prefix: bytes, on_event: Callable[[Event], Awaitable[None]]
    ) -> None:
        self._response = response
        self._on_event = on_event
        self._reader = EventReader()
        self._prefix = prefix
        self.status = response.status
        self.reason = response.reason
        self.headers = response.headers
        self.content = self  # the front ends read ``stream.content.iter_any()``

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    def release(self) -> None:
        self._response.release()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives (less the prefix, which the front end sends itself)."""
        if self._prefix:
            await self._read(self._prefix)
        async for chunk in self._response.content.iter_any():
            await self._read(chunk)
            yield chunk

    async def _read(self, chunk: bytes) -> None:
        for event in self._reader.feed(chunk):
            await self._on_event(event)
