"""Coalescing reads: every GET issued during one event-loop iteration goes out as one
multi-key read, so concurrent misses in L1 share one Redis round trip instead of each
waiting for its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ReadBatcher:
    """Collects keys and fetches them together with ``fetch_many`` (e.g. ``MGET``)."""

    def __init__(self, fetch_many: Callable[[list[str]], Awaitable[list[bytes | None]]]) -> None:
        self._fetch_many = fetch_many
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._fetch(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

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
