"""Coalescing reads: keys asked for together go out as one multi-key read (``MGET``), so
concurrent misses in L1 share one Redis round trip instead of each waiting for its own.

"Together" is not one event-loop turn: under load the loop turns so often that a turn
rarely holds more than one request's read (measured: one key per ``MGET``). So the keys
asked for while a round trip runs wait for it to return and then go out as one: a round
trip carries every read that arrived during the one before. They wait at most ``HOLD``
from its start; a slower one (Redis in trouble) does not hold them back: they go out on
their own, as every read did before. An idle batcher sends a key in the turn it was asked
for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

#: How long reads wait for the round trip under way (from its start) before going out on
#: their own: a few of Redis's usual round trips.
HOLD = 0.002


class ReadBatcher:
    """Collects keys and fetches them together with ``fetch_many`` (e.g. ``MGET``)."""

    def __init__(
        self,
        fetch_many: Callable[[list[str]], Awaitable[list[bytes | None]]],
        hold: float = HOLD,
    ) -> None:
        self._fetch_many = fetch_many
        self._hold = hold
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        #: Loop time the latest round trip started; the timer that sends what waits for it.
        self._latest = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._flush_due = False

    async def get(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if not self._flush_due and self._timer is None:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_due = False
        self._timer = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        if self._flushes and loop.time() < self._latest + self._hold:
            # Wait for the round trip under way (``_returned``), or until it is overdue.
            self._timer = loop.call_at(self._latest + self._hold, self._flush)
            return
        batch, self._pending = self._pending, {}
        self._latest = loop.time()
        task = asyncio.ensure_future(self._fetch(batch))
        self._flushes.add(task)
        task.add_done_callback(self._returned)

    def _returned(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._pending and not self._flush_due:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

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
