"""Everything one sidecache process holds while it runs, built from the config and closed on
shutdown. Both the proxy app and the admin app use the same runtime."""

from __future__ import annotations

import asyncio
import logging
import time

from core.cache import TieredCache
from core.config import Config
from core.invalidation import InvalidationBus
from core.limits import UpstreamLimiter
from core.metrics import Metrics
from core.monitor import SystemMonitor
from core.purge import Generations, Purger
from core.routes import RouteTable
from core.semantic.embedders import build_embedder
from core.semantic.tier import SemanticTier
from core.tasks import TaskSet
from core.tiers import Tier
from core.tiers.memory import MemoryTier
from core.tiers.redis import RedisTier
from proxy.forward import Upstream

log = logging.getLogger(__name__)


class Runtime:
    """The process's resources: metrics, tiers, the upstream session."""

    def __init__(
        self, config: Config, metrics: Metrics | None = None, primary: bool = True
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.routes = RouteTable(config.routes)
        self.l1 = MemoryTier(config.cache.l1) if config.cache.l1.enabled else None
        # Redis keys, the invalidation channel and semantic rows all live in this service's
        # namespace: services sharing one Redis or PostgreSQL never see each other's.
        self.namespace = config.l2_prefix
        l2 = config.cache.l2
        self.l2 = RedisTier(l2, self.metrics, self.namespace) if l2.url else None
        remotes: list[Tier] = [self.l2] if self.l2 is not None else []
        self.semantic = self._semantic_tier(config)
        self.cache = TieredCache(self.l1, remotes, self.metrics, self.semantic)
        self.upstream = Upstream(
            config.upstream, UpstreamLimiter(config, self.metrics), self.metrics
        )
        self.refreshes = TaskSet("background refresh")
        self.draining = False
        self.started_at = time.monotonic()
        self.generations = Generations()
        self.purger = Purger(
            self.cache, self.l2, self.semantic, self.generations, [r.name for r in config.routes]
        )
        self.bus: InvalidationBus | None = None
        if self.l2 is not None and self.l1 is not None:
            self.bus = InvalidationBus(l2, self.namespace, self.purger.apply, self.purger.catch_up)
            self.purger.bus = self.bus
        self.monitor = (
            SystemMonitor(config.monitor, self.metrics, self.tiers_available)
            if config.monitor.enabled and primary
            else None
        )
        self._gauges: asyncio.Task[None] | None = None

    def _semantic_tier(self, config: Config) -> SemanticTier | None:
        """The semantic tier, when a store is configured and some route opts in."""
        store = config.cache.semantic
        if not store.dsn or not any(route.semantic for route in config.routes):
            return None
        embedder = build_embedder(store.embedder)
        return SemanticTier(store, embedder, self.metrics, namespace=self.namespace)

    async def start(self) -> None:
        await self.upstream.start()
        if self.semantic is not None:
            await self.semantic.start()
        if self.bus is not None:
            await self.bus.start()
        if self.monitor is not None:
            await self.monitor.start()
        if self.metrics.multiprocess:
            # Another worker answers the scrape: keep this one's L1 gauges current.
            self._gauges = asyncio.ensure_future(self._refresh_gauges_every(1.0))

    async def close(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
        if self.monitor is not None:
            await self.monitor.stop()
        await self.refreshes.wait(self.config.server.drain_timeout)
        self.refreshes.cancel()
        await self.cache.flush(self.config.server.drain_timeout)
        if self.bus is not None:
            await self.bus.close()
        await self.upstream.close()
        if self.l2 is not None:
            await self.l2.close()
        if self.semantic is not None:
            await self.semantic.close()

    def tiers_available(self) -> dict[str, bool]:
        """The configured remote tiers and whether each is in use (not skipped by its breaker)."""
        tiers = {"l2": self.l2, "semantic": self.semantic}
        return {name: tier.available for name, tier in tiers.items() if tier is not None}

    async def _refresh_gauges_every(self, seconds: float) -> None:
        while True:
            self.refresh_gauges()
            await asyncio.sleep(seconds)

    def refresh_gauges(self) -> None:
        """Gauges read at scrape time rather than kept up to date on the hot path."""
        if self.l1 is not None:
            self.metrics.cache_entries.labels("l1").set(len(self.l1))
            self.metrics.cache_bytes.labels("l1").set(self.l1.bytes)
