"""Two real sidecache processes sharing one Redis: a purge through one reaches both."""

import asyncio

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import wait_until

SELECT = "/agents/select"
TOKEN = "replica-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TAGGED = {"X-Echo-Surrogate-Key": "agents"}


@pytest.fixture
async def replicas(run_sidecache, upstream, redis_url, monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", TOKEN)
    prefix = f"replicas-{id(upstream)}:"
    config = {
        "upstream": {"url": upstream.url},
        "cache": {"l2": {"url": redis_url, "key_prefix": prefix, "check_interval": "200ms"}},
        "routes": [{"name": "select", "path": SELECT}],
        "monitor": {"enabled": False},
    }
    return await asyncio.gather(run_sidecache(config), run_sidecache(config))


async def _ask(session, replica, task: str) -> tuple[str, int]:
    """Cache-Status and the upstream's call number the answer carries (which answer it is)."""
    async with session.post(f"{replica.url}{SELECT}", json={"task": task}, headers=TAGGED) as r:
        assert r.status == 200
        return r.headers["Cache-Status"], (await r.json())["n"]


async def _warm(session, replicas, task: str) -> int:
    """Every replica answers from its own L1; returns the call number of the cached answer."""
    for replica in replicas:
        await _ask(session, replica, task)
    for replica in replicas:
        await wait_until(lambda r=replica: _is_l1_hit(session, r, task))
    return (await _ask(session, replicas[0], task))[1]


async def _is_l1_hit(session, replica, task: str) -> bool:
    return (await _ask(session, replica, task))[0] == "sidecache; hit; detail=l1"


async def _forgets(session, replica, task: str, purged: int, timeout: float) -> None:
    """The replica stops serving the purged answer within ``timeout``."""

    async def forgot() -> bool:
        return (await _ask(session, replica, task))[1] != purged

    await wait_until(forgot, timeout=timeout)


@pytest.mark.parametrize(
    "purge",
    [
        {"request": {"method": "POST", "path": SELECT, "body": {"task": "T"}}},
        {"route": "select"},
        {"tag": "agents"},
        {"all": True},
    ],
    ids=["request", "route", "tag", "all"],
)
async def test_a_purge_through_one_replica_is_obeyed_by_each(replicas, upstream, purge):
    async with aiohttp.ClientSession() as session:
        purged = await _warm(session, replicas, "T")

        async with session.post(f"{replicas[0].admin_url}/purge", json=purge, headers=AUTH) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["purged"]["replicas_notified"] >= 2

        # The first request after the purge, to either replica, goes to the upstream; after
        # that the replicas share the new answer through Redis.
        status, answer = await _ask(session, replicas[1], "T")
        assert status.startswith("sidecache; fwd=miss")
        assert answer == purged + 1
        await _forgets(session, replicas[0], "T", purged, timeout=1)


async def test_a_replica_cut_off_from_redis_during_a_purge_does_not_serve_the_purged_entry(
    replicas, upstream, redis_url
):
    async with aiohttp.ClientSession() as session:
        purged = await _warm(session, replicas, "T")
        admin = redis.Redis.from_url(redis_url)
        subscribers = [
            c for c in await admin.client_list() if c.get("name", "").startswith("sidecache-")
        ]
        # Cut replica 1's subscription while replica 0 purges: the message may be lost.
        victim = await _subscriber_of(session, replicas[1], subscribers)
        await admin.client_kill_filter(_id=victim)
        async with session.post(
            f"{replicas[0].admin_url}/purge", json={"all": True}, headers=AUTH
        ) as r:
            assert r.status == 200
        await admin.aclose()

        await _forgets(session, replicas[1], "T", purged, timeout=2)
        # ... and once it has caught up it uses its L1 again
        await wait_until(lambda: _is_l1_hit(session, replicas[1], "T"), timeout=5)


async def test_a_purge_is_applied_by_every_replica_within_the_staleness_bound(replicas, upstream):
    """README: a purged entry is served by no replica for longer than about two check
    intervals (200 ms each here) plus pub/sub delivery."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        purged = await _warm(session, replicas, "T")
        purged_at = loop.time()
        async with session.post(
            f"{replicas[0].admin_url}/purge", json={"tag": "agents"}, headers=AUTH
        ) as r:
            assert r.status == 200
        await _forgets(session, replicas[1], "T", purged, timeout=2)
        assert loop.time() - purged_at < 2 * 0.2 + 0.5


async def _subscriber_of(session, replica, subscribers) -> str:
    async with session.get(f"{replica.admin_url}/stats") as r:
        replica_id = (await r.json())["replica"]
    (client,) = [c for c in subscribers if c["name"] == f"sidecache-{replica_id}"]
    return client["id"]
