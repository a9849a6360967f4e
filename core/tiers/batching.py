"""Coalescing reads: keys asked for together go out as one multi-key read (``MGET``), so
concurrent misses in L1 share one Redis round trip instead of each waiting for its own.

"Together" is not one event-loop turn: under load the loop turns so often that a turn
rarely holds more than one request's read (measured: one key per ``MGET``). So at most
``in_flight`` round trips run at once, and the keys asked for while they run go out
together as soon as one returns: a round trip carries every read that arrived during the
one before. An idle batcher sends a key in the turn it was asked for, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: Round trips at once: one keeps batches largest; a stalled one holds the rest back only
#: as long as the Redis timeout lets it run, which is what every read would wait anyway.
IN_FLIGHT = 1


class ReadBatcher:
    """Collects keys and fetches them together with ``fetch_many`` (e.g. ``MGET``)."""

    def __init__(
        self,
        fetch_many: Callable[[list[str]], Awaitable[list[bytes | None]]],
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._fetch_many = fetch_many
        self._in_flight = in_flight
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._flush_due = False

    async def get(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if len(self._flushes) < self._in_flight:
            self._flush_soon()
        return await future

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if not self._pending or len(self._flushes) >= self._in_flight:
            return  # (nothing asked, or a round trip that returns sends what is)
        batch, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._fetch(batch))
        self._flushes.add(task)
        task.add_done_callback(self._returned)

    def _returned(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending:
            self._flush_soon()

    async def _fetch(self, batch: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        keys = list(batch)
        try:
            values = await self._fetch_many(keys)
        except BaseException as exc:  # every waiter sees the failure, cancellation included
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, value in zip(keys, values, strict=True):
            for future in batch[key]:
                if not future.done():
                    future.set_result(value)
