"""Single-flight: concurrent callers with the same key share one execution.

The work runs in its own task so that a caller who goes away (client disconnect) does not
cancel it for the others; when the last caller is gone, it is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    callers: int = 0


class SingleFlight(Generic[T]):
    """Deduplicates concurrent calls by key."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    @property
    def waiting(self) -> int:
        """Callers waiting on some flight, leaders included."""
        return sum(flight.callers for flight in self._flights.values())

    async def do(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``work`` once for all concurrent callers of ``key``.

        Returns the result and whether this caller joined someone else's flight. Every
        caller sees the same exception if the work fails.
        """
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(work()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._forget(key, flight))
        flight.callers += 1
        try:
            return await asyncio.shield(flight.task), joined
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.task.done():
                flight.task.cancel()

    def _forget(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
