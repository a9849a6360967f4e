"""Cross-replica invalidation over Redis pub/sub.

Every purge is published on the service's channel (under ``Config.l2_prefix``, like its
keys: services sharing one Redis never hear each other's purges); every replica drops the
matching entries from its own L1.

L1 keeps answering, within its entries' lifetimes, whatever the state of the channel: a
replica cut off from Redis still saves its upstream most of its work. What it may have
missed is dealt with when the channel comes back: each (re)subscription first re-reads the
route generations, then drops the whole L1 (every entry in it may be one a missed purge
named), and only then applies messages again. How long a purged entry can still be served:

- subscribed: pub/sub delivery (milliseconds). A subscription that dies silently is found
  by a ping every ``check_interval`` (no answer for two intervals), and resubscribing drops
  L1: at most two check intervals plus reconnecting and delivery.
- Redis unreachable from a replica: purges cannot reach it (the purging replica says so),
  so its L1 copies live until they expire or until it resubscribes, whichever is first.
- after the reconnect: nothing missed survives it (L1 dropped, generations re-read); L2
  entries that a purge made during the outage could not delete are still there, which is
  why such a purge answers as incomplete and is to be repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from core.config import L2Config
from core.errors import TierUnavailable

log = logging.getLogger(__name__)

#: What losing Redis looks like, from the client or from a tier call behind its breaker.
_LOST = (RedisError, OSError, TimeoutError, TierUnavailable)


@dataclass(frozen=True, slots=True)
class ByRoute:
    """Every entry of a route: ``generation`` is the route's purge generation after it."""

    route: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class ByTag:
    """Every entry carrying the tag (a surrogate key, a request's own tag, a URI tag)."""

    tag: str


@dataclass(frozen=True, slots=True)
class Everything:
    """Every entry of this service."""


#: What a purge names: one of these, nothing else.
PurgeTarget = ByRoute | ByTag | Everything


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One purge as broadcast, stamped with the replica that made it."""

    target: PurgeTarget
    origin: str = ""

    def to_json(self) -> str:
        kind, value, generation = _wire(self.target)
        return json.dumps(
            {"kind": kind, "value": value, "generation": generation, "origin": self.origin}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Invalidation:
        data = json.loads(raw)
        kind, value, origin = str(data["kind"]), str(data["value"]), str(data["origin"])
        if kind == "route":
            return cls(ByRoute(value, int(data["generation"])), origin)
        if kind == "tag":
            return cls(ByTag(value), origin)
        if kind == "all":
            return cls(Everything(), origin)
        raise ValueError(f"unknown invalidation kind {kind!r}")


def _wire(target: PurgeTarget) -> tuple[str, str, int]:
    """The message fields of a target (the format every replica version reads)."""
    match target:
        case ByRoute(route, generation):
            return "route", route, generation
        case ByTag(tag):
            return "tag", tag, 0
        case Everything():
            return "all", "", 0
    raise TypeError(f"not a purge target: {target!r}")


class InvalidationBus:
    """Publishes this replica's purges and applies the other replicas' ones.

    ``on_message`` gets each message from another replica. ``on_subscribed`` is awaited
    after every (re)subscription, before any message is applied: messages may have been
    missed until then (it raises to have the subscription retried). ``healthy`` says
    whether the subscription is up; ``attempts`` counts (re)subscription attempts.
    """

    def __init__(
        self,
        config: L2Config,
        prefix: str,
        on_message: Callable[[Invalidation], None],
        on_subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self.healthy = False
        self.attempts = 0
        self._channel = prefix + config.channel
        self._interval = config.check_interval
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        # A plain connection even for a cluster: PUBLISH reaches subscribers on every node.
        # No retries inside the client: a purge must say at once that it was not broadcast.
        url = config.url.replace("redis+cluster://", "redis://")
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            client_name=f"sidecache-{self.replica}",
            retry=Retry(NoBackoff(), 0),
        )
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start listening; wait (at most one check interval) for the first subscription, so
        a replica starts with the route generations read and a cut-off one does not hang."""
        self._task = asyncio.ensure_future(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def publish(self, message: Invalidation) -> int:
        """Send a purge to every replica; returns how many subscribers received it (this
        replica's own subscription included). Raises when Redis cannot be reached."""
        stamped = Invalidation(message.target, self.replica)
        return await self._client.publish(self._channel, stamped.to_json())

    async def _run(self) -> None:
        while True:
            self.attempts += 1
            try:
                await self._listen()
            except _LOST as exc:
                level = logging.WARNING if self.healthy else logging.DEBUG
                log.log(level, "invalidation channel unavailable (%r): resubscribing", exc)
            except Exception:  # a bug must not end the task: purges would go unheard
                log.exception("invalidation listener failed: resubscribing")
            lost_live_subscription, self.healthy = self.healthy, False
            if not lost_live_subscription:
                # Pace attempts while Redis stays unreachable; a subscription that was up
                # is retried at once, as what it misses meanwhile stays in L1.
                await asyncio.sleep(self._interval)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            # Messages arriving from here on wait in the connection until catch-up is done.
            await self._on_subscribed()
            self.healthy = True
            self._subscribed.set()
            last_seen = last_ping = loop.time()
            while True:
                # Any traffic (a message, a pong) proves the subscription alive; a ping goes
                # out after an interval of silence, so a dead one is found within two.
                remaining = last_seen + 2 * self._interval - loop.time()
                if remaining <= 0:
                    raise TimeoutError("no answer to pings on the invalidation channel")
                message = await pubsub.get_message(timeout=min(self._interval, remaining))
                now = loop.time()
                if message is None:
                    if now - max(last_seen, last_ping) >= self._interval:
                        await pubsub.ping()
                        last_ping = now
                    continue
                last_seen = now
                if message["type"] == "message":
                    self._deliver(message["data"])

    def _deliver(self, raw: bytes) -> None:
        try:
            message = Invalidation.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed invalidation %r: %s", raw[:200], exc)
            return
        if message.origin != self.replica:
            self._on_message(message)
