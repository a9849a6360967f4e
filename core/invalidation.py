"""Cross-replica invalidation over Redis pub/sub.

Every purge is published on one channel; every replica drops the matching entries from its
own L1. A replica cannot know which messages it missed while its subscription was down, so
L1 is only used while the subscription is known to be alive: it is pinged every
``check_interval``, and after two intervals without an answer the replica clears its L1 and
serves from L2 and the upstream until it has subscribed again (and cleared L1 once more).
An entry purged anywhere is therefore served by no replica for longer than about two check
intervals plus the pub/sub delivery time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from core.config import L2Config
from core.errors import TierUnavailable

log = logging.getLogger(__name__)

KINDS = ("all", "route", "tag", "key")
#: What losing Redis looks like, from the client or from a tier call behind its breaker.
_LOST = (RedisError, OSError, TimeoutError, TierUnavailable)


@dataclass(frozen=True)
class Invalidation:
    """One purge as broadcast: ``kind`` is all / route / tag / key; ``value`` names which."""

    kind: str
    value: str = ""
    generation: int = 0
    origin: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Invalidation:
        data = json.loads(raw)
        message = cls(
            str(data["kind"]), str(data["value"]), int(data["generation"]), str(data["origin"])
        )
        if message.kind not in KINDS:
            raise ValueError(f"unknown invalidation kind {message.kind!r}")
        return message


class InvalidationBus:
    """Publishes this replica's purges and applies the other replicas' ones.

    ``on_message`` gets each message from another replica. ``on_gap(subscribed)`` is awaited
    whenever messages may have been missed: before the subscription is trusted (after every
    (re)subscribe) and on every reconnect attempt while it is down. ``healthy`` says
    whether L1 may be used.
    """

    def __init__(
        self,
        config: L2Config,
        on_message: Callable[[Invalidation], None],
        on_gap: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self.healthy = False
        self._channel = config.key_prefix + config.channel
        self._interval = config.check_interval
        self._on_message = on_message
        self._on_gap = on_gap
        # A plain connection even for a cluster: PUBLISH reaches subscribers on every node.
        url = config.url.replace("redis+cluster://", "redis://")
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            client_name=f"sidecache-{self.replica}",
        )
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Start listening; wait (at most one check interval) for the first subscription, so
        a healthy replica starts with L1 on and a cut-off one does not hang."""
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
        """Send a purge to every replica; returns how many subscribers received it."""
        stamped = Invalidation(message.kind, message.value, message.generation, self.replica)
        return await self._client.publish(self._channel, stamped.to_json())

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except _LOST as exc:
                if self.healthy:
                    log.warning("invalidation channel lost (%r): L1 off until resubscribed", exc)
            self.healthy = False
            with contextlib.suppress(*_LOST):
                await self._on_gap(False)
            await asyncio.sleep(self._interval)  # pace reconnect attempts

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            await self._on_gap(True)  # catch up on what may have been missed, then trust
            self.healthy = True
            self._subscribed.set()
            last_seen = loop.time()
            while True:
                if loop.time() - last_seen > 2 * self._interval:
                    raise TimeoutError("no answer to pings on the invalidation channel")
                message = await pubsub.get_message(timeout=self._interval)
                if message is None:
                    await pubsub.ping()
                    continue
                last_seen = loop.time()
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
