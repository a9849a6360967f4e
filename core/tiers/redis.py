"""L2: Redis, shared by every replica. Failures never reach the caller: a circuit breaker
turns them into misses and dropped writes, and probes Redis until it answers again.

One Redis may serve several services: every key this tier reads or writes (entries, tag
indexes, route generations) lives under the service's prefix (``Config.l2_prefix``), so one
service never reads another's entries and a purge never reaches past its own prefix."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.breaker import CircuitBreaker
from core.config import L2Config
from core.entry import CachedResponse
from core.errors import EntryFormatError, TierUnavailable
from core.metrics import Metrics
from core.tiers.batching import ReadBatcher

log = logging.getLogger(__name__)

#: Decoded entries remembered by their bytes (at most this many, each at most this big).
DECODE_MEMO_SIZE = 1024
DECODE_MEMO_MAX_BLOB = 8 * 1024
_GENERATION = "{gen}:"
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
# Add an entry key to a tag's index and make the index live as long as its longest entry.
_INDEX_TAG = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""


class RedisTier:
    """L2 over ``redis.asyncio``; entries are ``CachedResponse.to_bytes()`` blobs."""

    name = "l2"

    def __init__(self, config: L2Config, metrics: Metrics, prefix: str) -> None:
        self._config = config
        self._metrics = metrics
        self._prefix = prefix
        self.client = connect(config)
        self._reads = ReadBatcher(self._get_many)
        self._counters: dict[tuple[str, str], Any] = {}
        self._decoded: dict[bytes, CachedResponse] = {}
        self.breaker = CircuitBreaker("l2", config.breaker, metrics.tier_changed)
        metrics.tier_changed("l2", True)

    @property
    def available(self) -> bool:
        return self.breaker.available

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, key: str, count: bool = True) -> CachedResponse | None:
        if self.breaker.skipping:  # an open circuit answers at once, without queueing
            self._count("get", "skipped")
            return None
        try:
            blob = await self._reads.get(self._prefix + key)
        except TierUnavailable as exc:
            self._count("get", "error")
            log.debug("l2 get skipped: %s", exc)
            return None
        if blob is None:
            if count:
                self._count("get", "miss")
            return None
        try:
            entry = self._decode(blob)
        except EntryFormatError as exc:
            log.warning("dropping unreadable l2 entry: %s", exc)
            self._metrics.corrupt_entries.labels("l2").inc()
            with contextlib.suppress(TierUnavailable):
                await self.delete(key)
            return None
        if count:
            self._count("get", "hit")
        return entry

    def _decode(self, blob: bytes) -> CachedResponse:
        """``CachedResponse.from_bytes``, remembered for small blobs: a hot entry read again
        and again decodes once. (Only the parsing is remembered: every read still asks
        Redis, so a changed or deleted entry is seen at once.)"""
        if len(blob) > DECODE_MEMO_MAX_BLOB:
            return CachedResponse.from_bytes(blob)
        entry = self._decoded.get(blob)
        if entry is None:
            entry = CachedResponse.from_bytes(blob)
            if len(self._decoded) >= DECODE_MEMO_SIZE:
                self._decoded.clear()
            self._decoded[blob] = entry
        return entry

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """One round trip for a batch of reads (per slot on a cluster)."""
        if isinstance(self.client, redis.RedisCluster):
            return await self.breaker.call(lambda: self.client.mget_nonatomic(keys))
        return await self.breaker.call(lambda: self.client.mget(keys))

    async def set(self, key: str, entry: CachedResponse) -> None:
        """Store the entry and index it under each of its tags. Every command names one key
        (no cross-slot commands), so this works the same on Redis Cluster."""
        ttl_ms = int((entry.usable_until() - time.time()) * 1000)
        if ttl_ms <= 0:
            # Already past every window: it still replaces (removes) what the key held, as
            # the newest answer does in L1.
            await self._delete_quietly(key)
            return
        blob = entry.to_bytes(self._config.compress_above)

        async def write() -> None:
            if not entry.tags:
                await self.client.set(self._prefix + key, blob, px=ttl_ms)
                return
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self._prefix + key, blob, px=ttl_ms)
                for tag in entry.tags:
                    pipe.eval(_INDEX_TAG, 1, self._tag_key(tag), self._prefix + key, ttl_ms)
                await pipe.execute()

        try:
            await self.breaker.call(write)
        except TierUnavailable as exc:
            self._count("set", "error")
            log.debug("l2 set dropped: %s", exc)
            return
        self._count("set", "ok")

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.delete(key)
        except TierUnavailable as exc:
            self._count("set", "error")
            log.debug("l2 delete of a superseded entry dropped: %s", exc)

    async def delete(self, key: str) -> bool:
        """Delete one entry; raises ``TierUnavailable`` (a purge must know it failed)."""
        removed = await self.breaker.call(lambda: self.client.unlink(self._prefix + key))
        self._count("delete", "ok")
        return bool(removed)

    async def clear(self) -> int:
        """Delete every entry and tag index under this service's prefix (SCAN, not KEYS, so
        Redis never blocks) and return how many entries went; route generations stay, so no
        replica's view of them goes backwards."""
        tag_prefix = self._tag_key("").encode()
        generation_prefix = self._generation_key("").encode()

        async def scan_and_delete() -> int:
            matches = self.client.scan_iter(match=_glob_escape(self._prefix) + "*", count=500)
            removed = 0
            async for batch in _batches(matches):
                entries = [k for k in batch if not k.startswith(generation_prefix)]
                await self._unlink([k for k in entries if k.startswith(tag_prefix)])
                removed += await self._unlink([k for k in entries if not k.startswith(tag_prefix)])
            return removed

        return await self.breaker.call(scan_and_delete)

    async def purge_tag(self, tag: str) -> int:
        """Delete every entry indexed under ``tag``, then the index itself."""

        async def purge() -> int:
            members = await self.client.smembers(self._tag_key(tag))
            removed = await self._unlink(list(members))
            await self.client.unlink(self._tag_key(tag))
            return removed

        return await self.breaker.call(purge)

    async def bump_generation(self, route: str) -> int:
        """Purge a route in O(1): its generation is part of every key."""
        return await self.breaker.call(lambda: self.client.incr(self._generation_key(route)))

    async def generations(self, routes: list[str]) -> dict[str, int]:
        """Current generation of each route. One MGET: the ``{gen}`` hash tag keeps every
        generation key in one cluster slot.

        Read when the invalidation channel has just (re)subscribed, i.e. Redis has just
        answered: so an open circuit does not skip it (waiting for the breaker's next probe
        would keep missed purges in force for up to ``breaker.open_for``), and its success
        closes the circuit. Raises ``TierUnavailable`` when Redis does not answer."""
        if not routes:
            return {}
        keys = [self._generation_key(route) for route in routes]
        try:
            values = await self.client.mget(keys)
        except Exception as exc:  # whatever the client raised: Redis did not answer
            self.breaker.record_failure()
            raise TierUnavailable(f"l2: {exc!r}") from exc
        self.breaker.record_success()
        return {route: int(value or 0) for route, value in zip(routes, values, strict=True)}

    async def _unlink(self, keys: list[bytes | str]) -> int:
        if not keys:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command("UNLINK", key)  # one key per command: cluster-safe
            return sum(await pipe.execute())

    def _tag_key(self, tag: str) -> str:
        return f"{self._prefix}tag:{tag}"

    def _generation_key(self, route: str) -> str:
        return f"{self._prefix}{_GENERATION}{route}"

    def _count(self, op: str, result: str) -> None:
        counter = self._counters.get((op, result))
        if counter is None:  # a handful of (op, result) pairs: bind each label set once
            counter = self._counters[op, result] = self._metrics.cache_operations.labels(
                "l2", op, result
            )
        counter.inc()


def connect(config: L2Config) -> redis.Redis | redis.RedisCluster:
    """A client for ``config.url``: Redis Cluster when ``cluster`` is set or the URL says
    ``redis+cluster://``. No retries inside the client: the breaker decides when to retry."""
    url = config.url
    cluster = config.cluster or url.startswith("redis+cluster://")
    options = {
        "socket_timeout": config.timeout,
        "socket_connect_timeout": config.timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if cluster:
        return redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://"), **options)
    return redis.Redis.from_url(url, health_check_interval=0, **options)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern: a prefix holding ``*`` or ``[`` must
    not match other services' keys."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


async def _batches(keys, size: int = 500):
    batch = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
