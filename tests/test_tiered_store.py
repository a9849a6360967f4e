"""``TieredCache.store`` says whether an entry was stored anywhere, so an answer says
``stored`` only when it was: real L1, real Redis (which a test kills)."""

import uuid

import pytest

from core.cache import TieredCache
from core.config import BreakerConfig, L1Config, L2Config
from core.entry import CachedResponse
from core.metrics import Metrics
from core.tiers.memory import MemoryTier
from core.tiers.redis import RedisTier


def fresh_entry() -> CachedResponse:
    """Stored now (an entry made at import would have expired by the time a long suite
    reaches these tests)."""
    return CachedResponse(200, (("content-type", "application/json"),), b'{"agent": "a"}', ttl=60)


@pytest.fixture
async def redis_tier(redis_server):
    config = L2Config(url=redis_server.url, breaker=BreakerConfig(failures=1, open_for=3600))
    tier = RedisTier(config, Metrics(), f"test-{uuid.uuid4().hex[:8]}:")
    yield tier
    await tier.close()


def test_an_entry_l1_takes_is_stored():
    cache = TieredCache(MemoryTier(L1Config()), [], Metrics())
    assert cache.store("k", fresh_entry()) is True


def test_an_entry_too_big_for_l1_and_no_other_tier_is_not_stored():
    cache = TieredCache(MemoryTier(L1Config(max_bytes=8)), [], Metrics())
    assert cache.store("k", fresh_entry()) is False


async def test_a_write_queued_to_a_closed_circuit_is_stored(redis_tier):
    cache = TieredCache(None, [redis_tier], Metrics())
    assert cache.store("k", fresh_entry()) is True
    await cache.flush()
    assert await redis_tier.get("k") is not None


async def test_a_write_to_a_tier_whose_circuit_is_open_is_not_stored(redis_tier, redis_server):
    cache = TieredCache(None, [redis_tier], Metrics())
    redis_server.kill()
    assert await redis_tier.get("k") is None  # fails, and opens the circuit
    assert not redis_tier.available

    assert cache.store("k", fresh_entry()) is False
    await cache.flush()


async def test_l1_stores_while_the_remote_tier_is_out(redis_tier, redis_server):
    cache = TieredCache(MemoryTier(L1Config()), [redis_tier], Metrics())
    redis_server.kill()
    await redis_tier.get("k")

    assert cache.store("k", fresh_entry()) is True
    await cache.flush()


async def test_a_background_write_no_longer_wanted_is_skipped(redis_tier):
    """A purge may run between queueing a remote write and its start: the write is asked
    again then, so it cannot land after the purge cleared the tier."""
    cache = TieredCache(None, [redis_tier], Metrics())
    wanted = {"k1": True, "k2": True}
    cache.store("k1", fresh_entry(), wanted=lambda: wanted["k1"])
    cache.store("k2", fresh_entry(), wanted=lambda: wanted["k2"])
    wanted["k2"] = False  # (a purge naming it, before the queued writes start)
    assert await cache.flush(10)

    assert await redis_tier.get("k1") is not None
    assert await redis_tier.get("k2") is None
