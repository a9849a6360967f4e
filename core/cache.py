"""The multi-level cache: L1 first, then the remote exact tiers, then (for routes that opt
in) the semantic index. It composes tiers and knows nothing of Redis or pgvector."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from core.entry import CachedResponse
from core.metrics import Metrics
from core.tasks import TaskSet
from core.tiers import Tier
from core.tiers.memory import MemoryTier

#: Background writes beyond this many in flight are dropped (a slow tier must not pile up work).
MAX_PENDING_WRITES = 1000


class SemanticIndex(Protocol):
    """What the cache needs of the semantic tier."""

    available: bool

    async def lookup(
        self, scope: str, text: str, threshold: float, guard: bool
    ) -> SemanticMatch | None: ...

    async def store(self, scope: str, route: str, text: str, entry: CachedResponse) -> None: ...


class SemanticMatch(Protocol):
    entry: CachedResponse
    similarity: float


@dataclass(frozen=True, slots=True)
class Hit:
    """A cache hit and where it came from (``l1``, ``l2``, ``semantic``)."""

    entry: CachedResponse
    tier: str
    similarity: float | None = None


class TieredCache:
    """Looks up L1 → remote tiers (promoting hits into L1) and writes behind the response."""

    def __init__(
        self,
        l1: MemoryTier | None,
        remotes: list[Tier],
        metrics: Metrics,
        semantic: SemanticIndex | None = None,
    ) -> None:
        self.l1 = l1
        self.remotes = remotes
        self.semantic = semantic
        self._metrics = metrics
        self._writes = TaskSet("cache write")
        self._l1_ops = {
            result: metrics.cache_operations.labels("l1", "get", result)
            for result in ("hit", "miss")
        }

    def get_local(self, key: str, count: bool = True) -> CachedResponse | None:
        """L1 only, synchronous: the hot path. ``count=False`` leaves the hit/miss counting
        to the caller (a lookup that may be repeated must not be counted twice)."""
        if self.l1 is None:
            return None
        entry = self.l1.get_nowait(key)
        if count:
            self.count_local(entry is not None)
        return entry

    def count_local(self, hit: bool) -> None:
        self._metrics.tally.count(self._l1_ops["hit" if hit else "miss"])

    def count_hit_from(self, tier: str) -> None:
        """Count a lookup made uncounted (``count=False``) that ``tier`` answered: an L1
        hit, or an L1 miss and a hit further down."""
        if self.l1 is not None:
            self.count_local(tier == "l1")
        if tier != "l1":
            self._metrics.cache_operations.labels(tier, "get", "hit").inc()

    async def get_remote(self, key: str, count: bool = True) -> Hit | None:
        """The remote exact tiers in order; a hit is promoted into L1. ``count=False``
        leaves the hit/miss metrics to the caller (see ``count_local``)."""
        for tier in self.remotes:
            entry = await tier.get(key, count)
            if entry is not None:
                if self.l1 is not None:
                    self.l1.set_nowait(key, entry)
                return Hit(entry, tier.name)
        return None

    async def get_semantic(
        self, scope: str, text: str, threshold: float, guard: bool
    ) -> Hit | None:
        if self.semantic is None:
            return None
        match = await self.semantic.lookup(scope, text, threshold, guard)
        if match is None:
            return None
        return Hit(match.entry, "semantic", match.similarity)

    def store(
        self,
        key: str,
        entry: CachedResponse,
        semantic: tuple[str, str, str] | None = None,
        wanted: Callable[[], bool] | None = None,
    ) -> bool:
        """Write L1 now; remote tiers (and the semantic index, given ``(scope, route, text)``)
        in the background so the response is not delayed. A background write is skipped if
        ``wanted`` says no by the time it starts (a purge naming the entry ran meanwhile:
        it must not land after the purge cleared that tier).

        Returns whether the entry was stored anywhere: L1 took it (``set_nowait`` refuses
        an entry bigger than its byte bound), or a remote write was queued while that
        tier's circuit was closed (an open circuit drops the write). Only then may the
        answer say ``stored``. A queued write can still fail later; that is counted in
        ``sidecache_cache_operations_total``, not foreseen here."""
        stored = False
        if self.l1 is not None:
            stored = self.l1.set_nowait(key, entry)
        for tier in self.remotes:
            write = _if_wanted(tier.set(key, entry), wanted)
            if self._background(tier.name, write) and tier.available:
                stored = True
        if semantic is not None and self.semantic is not None:
            scope, route, text = semantic
            write = _if_wanted(self.semantic.store(scope, route, text, entry), wanted)
            if self._background("semantic", write) and self.semantic.available:
                stored = True
        return stored

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for the background writes in flight (on shutdown and in tests)."""
        return await self._writes.wait(timeout)

    def _background(self, tier: str, write: Coroutine[Any, Any, None]) -> bool:
        """Queue a remote write; False when it was dropped instead."""
        if len(self._writes) >= MAX_PENDING_WRITES:
            write.close()
            self._metrics.cache_operations.labels(tier, "set", "dropped").inc()
            return False
        self._writes.spawn(write)
        return True


def _if_wanted(
    write: Coroutine[Any, Any, None], wanted: Callable[[], bool] | None
) -> Coroutine[Any, Any, None]:
    if wanted is None:
        return write

    async def guarded() -> None:
        if wanted():
            await write
        else:
            write.close()

    return guarded()
