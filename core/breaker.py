"""A circuit breaker for a remote cache tier.

Closed: calls go through. After ``failures`` consecutive failures it opens: calls are
skipped (``TierUnavailable``) for ``open_for`` seconds. Then one probe call is let through;
success closes the circuit, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.config import BreakerConfig
from core.errors import TierUnavailable

T = TypeVar("T")


class CircuitBreaker:
    """Skips a sick tier and lets one probe through every ``open_for`` seconds."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        on_change: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._config = config
        self._on_change = on_change
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def available(self) -> bool:
        """True while the circuit is closed (the tier is believed healthy)."""
        return self._opened_at is None

    @property
    def skipping(self) -> bool:
        """True while calls are refused (open, and not yet time for a probe). Unlike
        ``allow`` it claims nothing, so callers can check it cheaply before queueing."""
        if self._opened_at is None:
            return False
        return self._probing or self._clock() - self._opened_at < self._config.open_for

    def allow(self) -> bool:
        """Whether a call may go out now (closed, or the one probe of an open circuit)."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self._config.open_for:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        if self._opened_at is not None:
            self._opened_at = None
            self._notify(True)

    def record_failure(self) -> None:
        self._failures += 1
        was_probing, self._probing = self._probing, False
        if was_probing or (self._opened_at is None and self._failures >= self._config.failures):
            if self._opened_at is None:
                self._notify(False)
            self._opened_at = self._clock()

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` through the breaker; any exception counts as a failure and
        surfaces as ``TierUnavailable``."""
        if not self.allow():
            raise TierUnavailable(f"{self.name}: circuit open")
        try:
            result = await operation()
        except Exception as exc:
            self.record_failure()
            raise TierUnavailable(f"{self.name}: {exc!r}") from exc
        except BaseException:
            self._probing = False  # a cancelled probe must not keep the circuit stuck open
            raise
        self.record_success()
        return result

    def _notify(self, available: bool) -> None:
        if self._on_change is not None:
            self._on_change(self.name, available)
