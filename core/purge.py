"""Purging: by request, by route, by tag, or everything, on this replica and all others.

Exact entries are deleted from L1 and Redis (by route: the route's generation, part of every
key, is bumped instead, which is O(1)); semantic rows are deleted too. The purge is then
broadcast so every other replica drops its L1 copies. Everything stays within this service's
namespace: its Redis prefix, its channel, its semantic rows.

A purge reports what each tier dropped and, in ``errors``, each part that did not happen:
``l2: …`` / ``semantic: …`` (that store still holds the entries) and ``broadcast: …`` (no
other replica was told: those whose subscription is down too drop their whole L1 when it
comes back, the others keep their copies until they expire). This replica's own L1 is
always purged. An incomplete purge is to be repeated once Redis answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from core.cache import TieredCache
from core.config import RouteConfig
from core.entry import CachedResponse
from core.errors import TierUnavailable
from core.headers import Target
from core.invalidation import (
    ByRoute,
    ByTag,
    Everything,
    Invalidation,
    InvalidationBus,
    PurgeTarget,
)
from core.keys import derive_key
from core.tiers.redis import RedisTier

log = logging.getLogger(__name__)

#: Tag purges remembered for answers in flight (see ``Purger.stores_since``).
REMEMBERED_TAGS = 4096


class SemanticPurge(Protocol):
    """What purging needs of the semantic tier (its rows of this service only)."""

    async def purge(
        self, route: str | None = None, tag: str | None = None, everything: bool = False
    ) -> int: ...


class Generations:
    """Each route's purge generation. It only moves forward, so a late or repeated message
    can never resurrect purged entries."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def get(self, route: str) -> int:
        return self._values.get(route, 0)

    def advance(self, route: str, generation: int) -> None:
        if generation > self.get(route):
            self._values[route] = generation


class PurgeReport(dict):
    """Entries dropped per tier (``None`` where a tier does not count), plus ``errors``."""

    @property
    def complete(self) -> bool:
        return not self.get("errors")


class Purger:
    """Carries out purges here and broadcasts them; applies other replicas' broadcasts."""

    def __init__(
        self,
        cache: TieredCache,
        l2: RedisTier | None,
        semantic: SemanticPurge | None,
        generations: Generations,
        routes: list[str],
    ) -> None:
        self._cache = cache
        self._l2 = l2
        self._semantic = semantic
        self._generations = generations
        self._routes = routes
        self.bus: InvalidationBus | None = None
        #: Moves on whenever this replica drops entries (a purge of its own, another
        #: replica's broadcast, a catch-up). An answer fetched while a purge that names it
        #: ran may be what the purge meant to drop: the engine does not store it
        #: (``stores_since``). Below: the epoch of the latest purge of each target.
        self.epoch = 0
        self._purged_all = 0
        self._purged_routes: dict[str, int] = {}
        self._purged_tags: dict[str, int] = {}

    async def purge(self, target: PurgeTarget) -> PurgeReport:
        """Carry out a purge here and tell every other replica."""
        match target:
            case ByRoute(route):
                return await self._by_route(route)
            case ByTag(tag):
                return await self._by_tag(tag)
            case Everything():
                return await self._everything()
        raise TypeError(f"not a purge target: {target!r}")

    def request_target(
        self,
        route: RouteConfig,
        method: str,
        target: Target,
        headers: Mapping[str, str],
        body: bytes,
    ) -> ByTag:
        """What names every stored copy of this request, whatever authority it was sent
        to, and its semantic row: the request's own tag, which each of them carries."""
        generation = self._generations.get(route.name)
        return ByTag(derive_key(route, method, target, headers, body, generation).request_tag)

    async def _by_route(self, route: str) -> PurgeReport:
        """Move the route's generation on. With Redis, Redis holds it: when it cannot be
        reached the generation stays (this replica's L1 copies are dropped all the same).
        Moving it on here alone would store this replica's new entries under a generation
        the others reach only at the next purge, which would then serve them."""
        report = PurgeReport(l1=self._drop_local(ByRoute(route)))
        generation = self._generations.get(route)
        if self._l2 is None:
            generation += 1
        else:
            try:
                generation = await self._l2.bump_generation(route)
            except TierUnavailable as exc:
                report.setdefault("errors", []).append(f"l2: {exc}")
        self._generations.advance(route, generation)
        report["l2"] = None  # every entry of the route, uncounted: its generation moved on
        report["generation"] = generation
        await self._remote(report, "semantic", self._semantic and self._semantic.purge(route))
        await self._broadcast(report, ByRoute(route, generation))
        return report

    async def _by_tag(self, tag: str) -> PurgeReport:
        report = PurgeReport(l1=self._drop_local(ByTag(tag)))
        await self._remote(report, "l2", self._l2 and self._l2.purge_tag(tag))
        await self._remote(report, "semantic", self._semantic and self._semantic.purge(tag=tag))
        await self._broadcast(report, ByTag(tag))
        return report

    async def _everything(self) -> PurgeReport:
        report = PurgeReport(l1=self._drop_local(Everything()))
        await self._remote(report, "l2", self._l2 and self._l2.clear())
        semantic = self._semantic and self._semantic.purge(everything=True)
        await self._remote(report, "semantic", semantic)
        await self._broadcast(report, Everything())
        return report

    def apply(self, message: Invalidation) -> None:
        """A purge broadcast by another replica: drop the matching L1 entries."""
        target = message.target
        if isinstance(target, ByRoute):
            self._generations.advance(target.route, target.generation)
        dropped = self._drop_local(target)
        log.debug("applied purge of %r: %d L1 entries", target, dropped)

    async def catch_up(self) -> None:
        """The invalidation channel is (re)subscribed after messages may have been missed:
        re-read the route generations, then drop every L1 entry (any of them may be one a
        missed purge named). Raises ``TierUnavailable`` if the generations cannot be read,
        leaving L1 as it was: the subscription is retried (see ``core.invalidation``).

        Nothing yields between advancing the generations and clearing L1: from the clear
        on, every lookup uses the current generations."""
        generations = await self._l2.generations(self._routes) if self._l2 is not None else {}
        for route, generation in generations.items():
            self._generations.advance(route, generation)
        self._note(Everything())
        dropped = self._cache.l1.clear_nowait() if self._cache.l1 is not None else 0
        log.info("invalidation channel subscribed: dropped %d L1 entries to catch up", dropped)

    def stores_since(self, epoch: int, entry: CachedResponse) -> bool:
        """Whether ``entry``, fetched from ``epoch`` on, may be stored: no purge naming it
        (its route, one of its tags, everything) ran since."""
        if self._purged_all > epoch or self._purged_routes.get(entry.route, 0) > epoch:
            return False
        purged = self._purged_tags
        return not any(purged.get(tag, 0) > epoch for tag in entry.tags)

    def _note(self, target: PurgeTarget) -> None:
        self.epoch += 1
        match target:
            case ByRoute(route):
                self._purged_routes[route] = self.epoch
            case ByTag(tag):
                if len(self._purged_tags) >= REMEMBERED_TAGS:
                    # Forgetting a tag's purge could let an answer it named be stored:
                    # forget them all as if everything had been purged (blocks only the
                    # answers in flight now).
                    self._purged_tags.clear()
                    self._purged_all = self.epoch
                self._purged_tags[tag] = self.epoch
            case Everything():
                self._purged_all = self.epoch

    def _drop_local(self, target: PurgeTarget) -> int:
        self._note(target)
        l1 = self._cache.l1
        if l1 is None:
            return 0
        match target:
            case ByRoute(route):
                return l1.drop_where(lambda entry: entry.route == route)
            case ByTag(tag):
                return l1.drop_where(lambda entry: tag in entry.tags)
        return l1.clear_nowait()

    async def _remote(self, report: PurgeReport, tier: str, operation: Any) -> None:
        if operation is None:
            return
        try:
            report[tier] = int(await operation)
        except TierUnavailable as exc:
            report[tier] = None
            report.setdefault("errors", []).append(f"{tier}: {exc}")

    async def _broadcast(self, report: PurgeReport, target: PurgeTarget) -> None:
        """Tell the other replicas; ``replicas_notified`` counts the subscribers reached
        (this replica included), ``None`` when nothing could be sent."""
        if self.bus is None:
            return
        try:
            report["replicas_notified"] = await self.bus.publish(Invalidation(target))
        except Exception as exc:  # any Redis failure: the purge is incomplete, say so
            report["replicas_notified"] = None
            report.setdefault("errors", []).append(
                f"broadcast: no other replica was told ({exc!r}); repeat the purge when "
                "Redis answers"
            )
