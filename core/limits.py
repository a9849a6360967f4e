"""Load shedding: bounded upstream concurrency, overall and per route.

A request waits at most ``queue_timeout`` for a slot; then it is shed (``Overloaded``), so a
slow upstream turns into fast 503s instead of an ever-growing queue. Cache hits never take
a slot.
"""

from __future__ import annotations

import asyncio

from core.config import Config
from core.errors import Overloaded
from core.metrics import Metrics


class UpstreamLimiter:
    """Hands out upstream slots: one from the route's own bound (if any) and one overall."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self._timeout = config.upstream.queue_timeout
        self._metrics = metrics
        bound = config.upstream.max_concurrency
        self._overall = asyncio.Semaphore(bound) if bound > 0 else None
        self._per_route = {
            route.name: asyncio.Semaphore(route.max_concurrency)
            for route in config.routes
            if route.max_concurrency > 0
        }

    async def acquire(self, route: str) -> tuple[asyncio.Semaphore, ...]:
        """Take the route's slot (if it has a bound) and an overall one, waiting at most
        ``queue_timeout`` in all; raises ``Overloaded``. Give them back with ``release``."""
        held: list[asyncio.Semaphore] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            for semaphore in (self._per_route.get(route), self._overall):
                if semaphore is not None:
                    await self._acquire(semaphore, route, deadline - loop.time())
                    held.append(semaphore)
        except BaseException:
            self.release(held)
            raise
        return tuple(held)

    def release(self, held: tuple[asyncio.Semaphore, ...] | list[asyncio.Semaphore]) -> None:
        for semaphore in held:
            semaphore.release()

    async def _acquire(self, semaphore: asyncio.Semaphore, route: str, wait: float) -> None:
        if not semaphore.locked():
            await semaphore.acquire()  # free slot: no timer needed
            return
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await semaphore.acquire()
        except TimeoutError:
            self._metrics.shed.labels(route).inc()
            raise Overloaded(f"no upstream slot free within {self._timeout:g}s") from None
