"""Cache tiers: each is a small async mapping from key to ``CachedResponse``."""

from __future__ import annotations

from typing import Protocol

from core.entry import CachedResponse


class Tier(Protocol):
    """An exact-match cache tier. ``get`` and ``set`` never raise on failure: a sick tier
    behaves as a miss and its writes are dropped. ``delete`` and ``clear`` raise
    ``TierUnavailable``, because a purge must know when it did not happen."""

    name: str

    @property
    def available(self) -> bool: ...

    async def get(self, key: str, count: bool = True) -> CachedResponse | None:
        """The entry or None; ``count=False`` leaves the hit/miss metric to the caller."""
        ...

    async def set(self, key: str, entry: CachedResponse) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def clear(self) -> int: ...
