"""Two real sidecache processes sharing one Redis: a purge through one reaches both.

Clients reach the replicas through one name, as through a Kubernetes Service: the same
``Host`` header whichever replica answers, so both derive the same keys. A purge reaches
the other replica over pub/sub, asynchronously: the tests wait for it with the deadline
the README promises (two check intervals plus delivery), never assume it instant.
"""

import asyncio

import aiohttp
import pytest
import redis.asyncio as redis

from tests.conftest import wait_until

SELECT = "/agents/select"
TOKEN = "replica-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: One Service name for both replicas, and the tag the upstream puts on its answers.
HEADERS = {"Host": "agents.default.svc.cluster.local", "X-Echo-Surrogate-Key": "agents"}
CHECK_INTERVAL = 0.2
#: Pub/sub delivery plus the polling requests themselves, with room for a loaded machine.
DELIVERY = 1.0
#: README: a purged entry is served by no replica for longer than this.
STALENESS_BOUND = 2 * CHECK_INTERVAL + DELIVERY


@pytest.fixture
async def replicas(run_sidecache, upstream, redis_url, monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", TOKEN)
    l2 = {"url": redis_url, "key_prefix": _prefix(upstream), "check_interval": f"{CHECK_INTERVAL}s"}
    config = {
        "upstream": {"url": upstream.url},
        "cache": {"l2": l2},
        "routes": [{"name": "select", "path": SELECT}],
        "monitor": {"enabled": False},
    }
    started = await asyncio.gather(run_sidecache(config), run_sidecache(config))
    async with aiohttp.ClientSession() as session:
        for replica in started:  # a purge is only broadcast to subscribed replicas
            await wait_until(lambda r=replica: _subscribed(session, r))
    return started


def _prefix(upstream) -> str:
    return f"replicas-{id(upstream)}:"


async def _subscribed(session, replica) -> bool:
    async with session.get(f"{replica.admin_url}/readyz") as r:
        return (await r.json())["invalidation"] == "subscribed"


async def _ask(session, replica, task: str) -> tuple[str, int]:
    """Cache-Status and the upstream's call number the answer carries (which answer it is)."""
    async with session.post(f"{replica.url}{SELECT}", json={"task": task}, headers=HEADERS) as r:
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


async def _purge(session, replica, body) -> dict:
    async with session.post(f"{replica.admin_url}/purge", json=body, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["purged"]


async def test_both_replicas_share_entries_through_redis(replicas, upstream, redis_url):
    async with aiohttp.ClientSession() as session:
        first = await _ask(session, replicas[0], "shared")
        # the first replica writes Redis behind its answer: wait until the write has landed
        store = redis.Redis.from_url(redis_url)
        tag_index = f"{_prefix(upstream)}*tag:agents"
        await wait_until(lambda: _exists(store, tag_index))  # written after the entry
        await store.aclose()
        second = await _ask(session, replicas[1], "shared")
    assert first == ("sidecache; fwd=miss; stored", 1)
    assert second == ("sidecache; hit; detail=l2", 1)
    assert upstream.calls[SELECT] == 1


async def _exists(store, pattern: str) -> bool:
    return bool([key async for key in store.scan_iter(match=pattern)])


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

        report = await _purge(session, replicas[0], purge)
        # Itself at least. The other may be between two subscriptions right now (a loaded
        # machine can miss a ping): then it drops its L1 on resubscribing, within the same
        # bound, which is what is checked below.
        assert report["replicas_notified"] >= 1

        # The purging replica dropped its copies before answering: its next answer is a new
        # one, from the upstream.
        status, answer = await _ask(session, replicas[0], "T")
        assert status.startswith("sidecache; fwd=miss")
        assert answer == purged + 1
        # The other one hears of it over pub/sub, within the staleness bound.
        await _forgets(session, replicas[1], "T", purged, timeout=STALENESS_BOUND)


async def test_a_replica_cut_off_from_redis_during_a_purge_does_not_serve_the_purged_entry(
    replicas, upstream, redis_url
):
    async with aiohttp.ClientSession() as session:
        purged = await _warm(session, replicas, "T")
        admin = redis.Redis.from_url(redis_url)
        # Cut replica 1's subscription while replica 0 purges: the message may be lost.
        victim = await _subscriber_of(session, replicas[1], await admin.client_list())
        await admin.client_kill_filter(_id=victim)
        await _purge(session, replicas[0], {"all": True})
        await admin.aclose()

        # Resubscribing, it drops the L1 copies a missed purge may have named...
        await _forgets(session, replicas[1], "T", purged, timeout=STALENESS_BOUND)
        # ... and then uses its L1 again
        await wait_until(lambda: _is_l1_hit(session, replicas[1], "T"), timeout=5)


async def test_a_purge_is_applied_by_every_replica_within_the_staleness_bound(replicas, upstream):
    """README: a purged entry is served by no replica for longer than about two check
    intervals (200 ms each here) plus pub/sub delivery."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        purged = await _warm(session, replicas, "T")
        purged_at = loop.time()
        await _purge(session, replicas[0], {"tag": "agents"})
        await _forgets(session, replicas[1], "T", purged, timeout=2 * STALENESS_BOUND)
        assert loop.time() - purged_at < STALENESS_BOUND


async def _subscriber_of(session, replica, clients) -> str:
    """The Redis client id of ``replica``'s subscription (its bus names its connections)."""
    async with session.get(f"{replica.admin_url}/stats") as r:
        replica_id = (await r.json())["replica"]
    (client,) = [
        c for c in clients if c["name"] == f"sidecache-{replica_id}" and int(c.get("sub", 0))
    ]
    return client["id"]
