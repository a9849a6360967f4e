"""L1: an in-process LRU cache with per-entry expiry, bounded by entries and by bytes."""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TLRUCache

from core.config import L1Config
from core.entry import CachedResponse

# What one item costs L1 beyond ``CachedResponse.size``: its key (a 40-hex digest, 96 bytes)
# and cachetools' TLRUCache structures for it: a slot in three dicts (values, sizes, the
# OrderedDict of recency), an OrderedDict node, an _Item with its expiry float, a heap slot and
# the int the sizes dict holds. Measured with tracemalloc under LRU churn (CPython 3.11,
# cachetools 8, 5k-40k items) and rounded to pymalloc's blocks: 320-390 bytes besides the key
# with one TTL; 420-480 on average and up to 580 with mixed TTLs, where evicted _Items (each
# still holding its key) wait in the expiry heap until it is compacted at twice the live count.
_PER_ITEM = 96 + 500


def _usable_until(_key: str, entry: CachedResponse, _now: float) -> float:
    return entry.usable_until()


def _cost(entry: CachedResponse) -> int:
    return entry.size + _PER_ITEM


class MemoryTier:
    """L1. Reads are synchronous (``get_nowait``): a hit never yields to the event loop."""

    name = "l1"
    available = True

    def __init__(self, config: L1Config) -> None:
        self._max_entries = config.max_entries
        self._max_bytes = config.max_bytes
        # maxsize counts bytes; the entry bound is enforced in set().
        self._cache: TLRUCache[str, CachedResponse] = TLRUCache(
            maxsize=config.max_bytes,
            ttu=_usable_until,
            timer=time.time,
            getsizeof=_cost,
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def bytes(self) -> int:
        return int(self._cache.currsize)

    def get_nowait(self, key: str) -> CachedResponse | None:
        # (Indexing, not ``get``: one pass through cachetools' layers instead of three. An
        # entry past its ``usable_until`` raises KeyError like an absent one.)
        try:
            return self._cache[key]
        except KeyError:
            return None

    def set_nowait(self, key: str, entry: CachedResponse) -> bool:
        """Store ``entry``; False when it can never fit (bigger than the byte bound)."""
        if _cost(entry) > self._max_bytes:
            return False
        self._cache.pop(key, None)
        while len(self._cache) >= self._max_entries:
            self._cache.popitem()
        self._cache[key] = entry
        return True

    def delete_nowait(self, key: str) -> bool:
        return self._cache.pop(key, None) is not None

    def drop_where(self, predicate: Callable[[CachedResponse], bool]) -> int:
        """Drop every entry the predicate selects (a scan: purges are rare, L1 is small)."""
        doomed = [key for key, entry in list(self._cache.items()) if predicate(entry)]
        for key in doomed:
            self._cache.pop(key, None)
        return len(doomed)

    def clear_nowait(self) -> int:
        count = len(self._cache)
        self._cache.clear()
        return count

    async def get(self, key: str, count: bool = True) -> CachedResponse | None:
        return self.get_nowait(key)  # L1's hits and misses are counted by TieredCache

    async def set(self, key: str, entry: CachedResponse) -> None:
        self.set_nowait(key, entry)

    async def delete(self, key: str) -> bool:
        return self.delete_nowait(key)

    async def clear(self) -> int:
        return self.clear_nowait()
