"""Two services sharing one Redis: sidecars in front of different upstreams, with the same
routes and the same key prefix (the shipped config), never see each other's entries, and a
purge through one leaves the other's alone. Real ``sidecache run`` processes."""

import uuid

import aiohttp
import pytest
import redis.asyncio as redis

from core.config import config_from_dict
from tests.conftest import wait_until
from tests.upstream import FakeUpstream

SELECT = "/agents/select"
TOKEN = "namespace-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Both services are addressed by the same name (say each pod's own "localhost"), so only
#: the namespace keeps their keys apart.
HEADERS = {"Host": "agents", "X-Echo-Surrogate-Key": "agents"}


@pytest.fixture
async def other_upstream():
    server = FakeUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def services(run_sidecache, upstream, other_upstream, redis_url, monkeypatch):
    """Sidecars A (in front of ``upstream``) and B (``other_upstream``) sharing one Redis;
    returns each with its config."""
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", TOKEN)
    prefix = f"ns-{uuid.uuid4().hex[:8]}:"  # the same for both: this test's share of Redis
    configs = [
        {
            "upstream": {"url": service.url},
            # (Pings every 2 s: on a loaded machine a shorter interval can make a live
            # subscription look dead mid-test, and a purge then reaches no subscriber.)
            "cache": {"l2": {"url": redis_url, "key_prefix": prefix, "check_interval": "2s"}},
            "routes": [{"name": "select", "path": SELECT}],
            "monitor": {"enabled": False},
        }
        for service in (upstream, other_upstream)
    ]
    started = [(await run_sidecache(config), config_from_dict(config)) for config in configs]
    async with aiohttp.ClientSession() as session:
        for sidecar, _ in started:  # purges are broadcast to subscribed replicas only
            await wait_until(lambda s=sidecar: _subscribed(session, s))
    return started


async def _subscribed(session, sidecar) -> bool:
    async with session.get(f"{sidecar.admin_url}/readyz") as r:
        return (await r.json())["invalidation"] == "subscribed"


async def _ask(session, sidecar, task: str) -> str:
    async with session.post(f"{sidecar.url}{SELECT}", json={"task": task}, headers=HEADERS) as r:
        assert r.status == 200
        return r.headers["Cache-Status"]


async def _keys(store, config) -> set[bytes]:
    return {key async for key in store.scan_iter(match=f"{config.l2_prefix}*")}


async def _in_redis(store, config) -> None:
    """Wait until the sidecar's background write of its tagged entry has landed (the tag
    index is written after the entry)."""

    async def indexed() -> bool:
        return any(key.endswith(b"tag:agents") for key in await _keys(store, config))

    await wait_until(indexed)


async def test_each_service_has_its_own_namespace(services):
    (_, config_a), (_, config_b) = services
    assert config_a.l2_prefix != config_b.l2_prefix
    assert config_a.l2_prefix.startswith(config_a.cache.l2.key_prefix)


async def test_service_b_never_gets_service_a_answers_from_redis(
    services, upstream, other_upstream, redis_url
):
    (a, config_a), (b, _) = services
    store = redis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as session:
        assert await _ask(session, a, "T") == "sidecache; fwd=miss; stored"
        await _in_redis(store, config_a)
        answered_by_b = await _ask(session, b, "T")
    await store.aclose()
    assert answered_by_b == "sidecache; fwd=miss; stored"
    assert (upstream.calls[SELECT], other_upstream.calls[SELECT]) == (1, 1)


@pytest.mark.parametrize(
    "purge",
    [{"all": True}, {"route": "select"}, {"tag": "agents"}],
    ids=["all", "route", "tag"],
)
async def test_a_purge_through_service_a_leaves_service_b_entries(services, redis_url, purge):
    (a, _), (b, config_b) = services
    store = redis.Redis.from_url(redis_url)
    async with aiohttp.ClientSession() as session:
        for sidecar, config in services:
            await _ask(session, sidecar, "T")
            await _in_redis(store, config)
        b_keys = await _keys(store, config_b)

        async with session.post(f"{a.admin_url}/purge", json=purge, headers=AUTH) as r:
            assert r.status == 200, await r.text()
            report = (await r.json())["purged"]

        assert await _keys(store, config_b) == b_keys  # B's Redis keys untouched
        # B's channel is not A's: only A itself heard the purge, B's L1 still answers.
        assert report["replicas_notified"] == 1
        assert await _ask(session, b, "T") == "sidecache; hit; detail=l1"
        assert await _ask(session, a, "T") == "sidecache; fwd=miss; stored"
    await store.aclose()
    if "all" in purge:
        assert report["l2"] == 1  # A's one entry, not B's
