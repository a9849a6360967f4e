"""L2: Redis, shared by every replica. Failures never reach the caller: a circuit breaker
turns them into misses and dropped writes, and probes Redis until it answers again."""

from __future__ import annotations

import logging
import time

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.breaker import CircuitBreaker
from core.config import L2Config
from core.entry import CachedResponse
from core.errors import EntryFormatError, TierUnavailable
from core.metrics import Metrics

log = logging.getLogger(__name__)


class RedisTier:
    """L2 over ``redis.asyncio``; entries are ``CachedResponse.to_bytes()`` blobs."""

    name = "l2"

    def __init__(self, config: L2Config, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self._prefix = config.key_prefix
        # No retries inside the client: the breaker decides when to try again.
        self.client = redis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.breaker = CircuitBreaker("l2", config.breaker, metrics.tier_changed)
        metrics.tier_changed("l2", True)

    @property
    def available(self) -> bool:
        return self.breaker.available

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, key: str) -> CachedResponse | None:
        try:
            blob = await self.breaker.call(lambda: self.client.get(self._prefix + key))
        except TierUnavailable as exc:
            self._count("get", "error")
            log.debug("l2 get skipped: %s", exc)
            return None
        if blob is None:
            self._count("get", "miss")
            return None
        try:
            entry = CachedResponse.from_bytes(blob)
        except EntryFormatError as exc:
            log.warning("dropping unreadable l2 entry: %s", exc)
            self._metrics.corrupt_entries.labels("l2").inc()
            await self.delete(key)
            return None
        self._count("get", "hit")
        return entry

    async def set(self, key: str, entry: CachedResponse) -> None:
        ttl_ms = int((entry.usable_until() - time.time()) * 1000)
        if ttl_ms <= 0:
            return
        blob = entry.to_bytes(self._config.compress_above)
        try:
            await self.breaker.call(lambda: self.client.set(self._prefix + key, blob, px=ttl_ms))
        except TierUnavailable as exc:
            self._count("set", "error")
            log.debug("l2 set dropped: %s", exc)
            return
        self._count("set", "ok")

    async def delete(self, key: str) -> bool:
        try:
            removed = await self.breaker.call(lambda: self.client.delete(self._prefix + key))
        except TierUnavailable:
            self._count("delete", "error")
            return False
        self._count("delete", "ok")
        return bool(removed)

    async def clear(self) -> int:
        """Delete every key under the prefix (SCAN, not KEYS, so Redis never blocks)."""

        async def scan_and_delete() -> int:
            removed = 0
            async for batch in _batches(self.client.scan_iter(match=self._prefix + "*", count=500)):
                removed += await self.client.unlink(*batch)
            return removed

        try:
            return await self.breaker.call(scan_and_delete)
        except TierUnavailable:
            self._count("delete", "error")
            return 0

    def _count(self, op: str, result: str) -> None:
        self._metrics.cache_operations.labels("l2", op, result).inc()


async def _batches(keys, size: int = 500):
    batch = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
