"""The tier contract: every ``Tier`` (core/tiers) behaves the same, whatever it keeps entries
in. Each test runs against the in-process memory tier (L1) and the Redis tier (L2) on a real
Redis, like cachetools' one ``CacheTestMixin`` for every cache class."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from core.config import L1Config, L2Config
from core.entry import CachedResponse
from core.metrics import Metrics
from core.tiers import Tier
from core.tiers.memory import MemoryTier
from core.tiers.redis import RedisTier

TierFactory = Callable[[], Awaitable[Tier]]

MiB = 1024 * 1024


@pytest.fixture(params=["memory", "redis"])
async def new_tier(request: pytest.FixtureRequest) -> AsyncIterator[TierFactory]:
    """Make tiers of one kind. Redis tiers share the session's Redis, each under a key prefix
    of its own (as two services sharing one Redis would); memory tiers share nothing."""
    made: list[Tier] = []

    async def make() -> Tier:
        if request.param == "memory":
            tier: Tier = MemoryTier(L1Config())
        else:
            url = request.getfixturevalue("redis_url")
            tier = RedisTier(L2Config(url=url), Metrics(), f"contract-{uuid.uuid4().hex}:")
        made.append(tier)
        return tier

    yield make
    for tier in made:
        await tier.clear()
        if isinstance(tier, RedisTier):
            await tier.close()


@pytest.fixture
async def tier(new_tier: TierFactory) -> Tier:
    return await new_tier()


def entry(body: bytes = b'{"agent": "planner"}', **fields) -> CachedResponse:
    """A fresh entry, stored now (never at import: it would expire before a long suite got
    here), fresh for a minute unless ``fields`` say otherwise."""
    fields.setdefault("ttl", 60.0)
    headers = fields.pop("headers", (("Content-Type", "application/json"),))
    return CachedResponse(200, headers, body, **fields)


def aged(seconds: float, **fields) -> CachedResponse:
    """An entry stored ``seconds`` ago: the test's clock, without sleeping."""
    return entry(stored_at=time.time() - seconds, **fields)


async def test_a_healthy_tier_is_available(tier):
    assert tier.available


async def test_get_of_an_absent_key_is_none(tier):
    assert await tier.get("absent") is None


async def test_get_of_a_key_never_set_is_none_when_others_are(tier):
    await tier.set("a", entry())

    assert await tier.get("b") is None


async def test_set_then_get_returns_an_equal_entry_with_every_field(tier):
    stored = CachedResponse(
        status=203,
        headers=(
            ("Content-Type", "application/json"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ),
        body=b'{"agent": "planner", "score": 0.93}',
        stored_at=time.time() - 1.25,
        ttl=60.5,
        stale_while_revalidate=30.25,
        stale_if_error=600.0,
        keep_stale=3600.0,
        tags=("agents", "tenant-7", "p\u00e9rim\u00e8tre"),
        route="select",
        vary=(("Accept-Language", "fr"), ("Accept-Encoding", "gzip, br")),
    )
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_an_empty_entry_round_trips(tier):
    stored = CachedResponse(204, (), b"", ttl=60)
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_get_without_counting_returns_the_entry_too(tier):
    stored = entry()
    await tier.set("k", stored)

    assert await tier.get("k", count=False) == stored


async def test_set_twice_keeps_the_last(tier):
    second = entry(b"second", tags=("b",), route="search")
    await tier.set("k", entry(b"first", tags=("a",), route="select"))
    await tier.set("k", second)

    assert await tier.get("k") == second


async def test_entries_under_different_keys_are_independent(tier):
    await tier.set("a", entry(b"a"))
    await tier.set("b", entry(b"b"))

    assert [(await tier.get(k)).body for k in ("a", "b")] == [b"a", b"b"]


async def test_delete_removes_the_entry_and_says_so(tier):
    await tier.set("k", entry())

    assert await tier.delete("k") is True
    assert await tier.get("k") is None


async def test_delete_of_an_absent_key_says_nothing_was_removed(tier):
    assert await tier.delete("absent") is False


async def test_delete_leaves_other_keys(tier):
    await tier.set("a", entry(b"a"))
    await tier.set("b", entry(b"b"))

    await tier.delete("a")

    assert (await tier.get("b")).body == b"b"


async def test_clear_removes_every_entry_and_counts_them(tier):
    await tier.set("a", entry(b"a"))
    await tier.set("b", entry(b"b", tags=("x", "y")))  # tag indexes are not entries
    await tier.set("c", entry(b"c", route="search"))

    assert await tier.clear() == 3
    assert [await tier.get(k) for k in ("a", "b", "c")] == [None, None, None]


async def test_clear_of_an_empty_tier_removes_nothing(tier):
    assert await tier.clear() == 0


async def test_a_cleared_tier_takes_new_entries(tier):
    await tier.set("k", entry(b"old"))
    await tier.clear()

    await tier.set("k", entry(b"new"))

    assert (await tier.get("k")).body == b"new"


async def test_clear_leaves_another_tiers_entries_alone(new_tier):
    """For Redis: another service's prefix on the same Redis, same keys and tags."""
    mine, theirs = await new_tier(), await new_tier()
    await mine.set("k", entry(b"mine", tags=("shared",)))
    await theirs.set("k", entry(b"theirs", tags=("shared",)))

    await mine.clear()

    assert await mine.get("k") is None
    assert (await theirs.get("k")).body == b"theirs"


async def test_an_entry_past_every_window_is_not_returned(tier):
    past = aged(1000, ttl=10, stale_while_revalidate=100, stale_if_error=200, keep_stale=300)
    await tier.set("k", past)

    assert await tier.get("k") is None


@pytest.mark.parametrize("window", ["stale_while_revalidate", "stale_if_error", "keep_stale"])
async def test_an_entry_inside_a_stale_window_is_returned(tier, window):
    """Only the caller knows whether a stale entry may be served (or only revalidated)."""
    stale = aged(100, ttl=10, **{window: 300})
    await tier.set("k", stale)

    assert await tier.get("k") == stale


async def test_an_entry_past_every_window_replaces_a_live_one(tier):
    await tier.set("k", entry(b"old", ttl=3600))

    await tier.set("k", aged(1000, body=b"new", ttl=10))

    assert await tier.get("k") is None


async def test_a_large_body_round_trips(tier):
    stored = entry(random.Random(1).randbytes(MiB))  # incompressible
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_a_large_compressible_body_round_trips(tier):
    stored = entry(b'{"agent": "planner"}, ' * (MiB // 22))
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_a_body_with_every_byte_value_round_trips(tier):
    stored = entry(bytes(range(256)) * 3, headers=(("Content-Type", "application/octet-stream"),))
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_non_ascii_latin_1_header_values_round_trip(tier):
    headers = (("X-Caf\u00e9", "caf\u00e9 \u00a9 na\u00efve\u00a0\u00ff"), ("X-Plain", "ok"))
    stored = entry(headers=headers, vary=(("Accept-Language", "fran\u00e7ais"),))
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_utf8_header_values_beyond_latin_1_round_trip(tier):
    """``X-Name: \\xe6\\x97\\xa5...`` from an upstream reaches us as aiohttp decodes it."""
    stored = entry(headers=(("X-Name", "\u65e5\u672c\u8a9e \U0001f600"),))
    await tier.set("k", stored)

    assert await tier.get("k") == stored


async def test_header_values_that_are_not_utf8_round_trip(tier):
    """``X-Raw: \\xff\\xfe`` from an upstream reaches us as ``"\\udcff\\udcfe"``."""
    stored = entry(headers=(("X-Raw", "\udcff\udcfe"),))
    await tier.set("k", stored)

    assert await tier.get("k") == stored
