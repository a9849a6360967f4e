"""Redis down: L1 keeps answering within its entries' lifetimes, purges say they could not
be broadcast, and when Redis is back every replica drops its L1 once, re-reads the route
generations and uses L2 again. Two replicas in this process, one Redis this test kills."""

import aiohttp
import pytest

from tests.conftest import DEFAULT_ROUTES, wait_until
from tests.upstream import echo_of

SELECT = "/agents/select"
TOKEN = "outage-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The replicas are addressed through one name (a Kubernetes Service), so they share keys.
HEADERS = {"Host": "agents", "X-Echo-Surrogate-Key": "agents"}
HIT_L1 = "sidecache; hit; detail=l1"
HIT_L2 = "sidecache; hit; detail=l2"
STORED = "sidecache; fwd=miss; stored"


@pytest.fixture
def admin_token(monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", TOKEN)


@pytest.fixture
async def replicas(make_proxy, upstream, redis_server, admin_token):
    """Two replicas sharing ``redis_server``, both subscribed to the invalidation channel."""
    l2 = {"url": redis_server.url, "check_interval": "200ms"}
    started = [await make_proxy(cache={"l2": l2}) for _ in range(2)]
    for proxy in started:
        await wait_until(lambda p=proxy: _subscribed(p))
    return started


async def _subscribed(proxy) -> bool:
    return proxy.runtime.bus.healthy


async def _unsubscribed(proxy) -> bool:
    return not proxy.runtime.bus.healthy


async def _ask(proxy, task: str) -> tuple[str, int]:
    """Cache-Status and the upstream's call number the answer carries (which answer it is)."""
    response = await proxy.client.post(SELECT, json={"task": task}, headers=HEADERS)
    assert response.status == 200
    return response.headers["Cache-Status"], echo_of(await response.read())["n"]


async def _status(proxy, task: str) -> str:
    return (await _ask(proxy, task))[0]


async def _kill_redis(redis_server, replicas) -> None:
    """Kill Redis and wait until each replica has failed to resubscribe twice (so reconnect
    attempts have run while L1 was in use)."""
    redis_server.kill()
    for proxy in replicas:
        await wait_until(lambda p=proxy: _unsubscribed(p))
        attempts = proxy.runtime.bus.attempts
        await wait_until(lambda p=proxy, n=attempts: _at_least(p.runtime.bus.attempts, n + 2))


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor


async def test_l1_keeps_answering_while_redis_is_down(replicas, upstream, redis_server):
    (proxy, _) = replicas
    assert await _status(proxy, "warm") == STORED
    await _kill_redis(redis_server, replicas)

    assert await _status(proxy, "warm") == HIT_L1
    # A miss during the outage is stored in L1, and said to be: the next answer is a hit.
    assert await _status(proxy, "new") == STORED
    assert await _status(proxy, "new") == HIT_L1
    assert upstream.calls[SELECT] == 2
    ready = await (await proxy.admin.get("/readyz")).json()
    assert ready["invalidation"] == "down"


async def test_a_purge_during_the_outage_says_the_broadcast_failed(
    replicas, upstream, redis_server
):
    (proxy, _) = replicas
    purged = (await _ask(proxy, "T"))[1]
    await _kill_redis(redis_server, replicas)

    response = await proxy.admin.post("/purge", json={"tag": "agents"}, headers=AUTH)
    report = (await response.json())["purged"]

    assert response.status == 503
    assert report["l1"] == 1  # this replica's own copy went all the same
    assert report["replicas_notified"] is None
    assert [e.split(":")[0] for e in report["errors"]] == ["l2", "broadcast"]
    assert "no other replica was told" in report["errors"][1]
    assert (await _ask(proxy, "T"))[1] == purged + 1


async def test_after_redis_restarts_each_replica_drops_l1_once_and_uses_l2_again(
    replicas, upstream, redis_server
):
    first, second = replicas
    assert await _status(first, "before") == STORED
    await first.runtime.cache.flush()
    assert await _status(second, "before") == HIT_L2
    await _kill_redis(redis_server, replicas)
    assert await _status(first, "during") == STORED
    assert await _status(first, "during") == HIT_L1
    assert await _status(second, "before") == HIT_L1

    redis_server.start()  # the same port, empty: no persistence
    for proxy in replicas:
        await wait_until(lambda p=proxy: _subscribed(p))

    # L1 was dropped on resubscribing: what it held may have been purged meanwhile.
    assert await _status(first, "during") == STORED
    assert await _status(second, "before") == STORED
    # ... once: from then on L1 answers again, and L2 carries entries between replicas.
    assert await _status(first, "during") == HIT_L1
    await first.runtime.cache.flush()
    assert await _status(second, "during") == HIT_L2
    assert second.runtime.l2.available


async def test_a_purge_missed_during_the_outage_is_obeyed_once_redis_is_back(
    replicas, upstream, redis_server
):
    first, second = replicas
    purged = (await _ask(first, "T"))[1]
    await first.runtime.cache.flush()
    assert await _ask(second, "T") == (HIT_L2, purged)
    await _kill_redis(redis_server, replicas)

    response = await first.admin.post("/purge", json={"tag": "agents"}, headers=AUTH)
    assert response.status == 503
    # The other replica could not be told: it serves its copy while Redis is down ...
    assert await _ask(second, "T") == (HIT_L1, purged)

    redis_server.start()
    await wait_until(lambda: _subscribed(second))
    # ... and drops it when its subscription is back
    status, answer = await _ask(second, "T")
    assert (status, answer) == (STORED, purged + 1)


async def test_a_route_purge_that_could_not_reach_redis_leaves_the_generation_to_redis(
    replicas, upstream, redis_server
):
    """Were the purging replica to move its own generation on alone, it would store entries
    under a generation the others reach only at the next purge, which would then serve
    them: answers from before that purge."""
    first, second = replicas
    await _kill_redis(redis_server, replicas)
    failed = await first.admin.post("/purge", json={"route": "select"}, headers=AUTH)
    assert failed.status == 503
    redis_server.start()
    for proxy in replicas:
        await wait_until(lambda p=proxy: _subscribed(p))
    stored_before = (await _ask(first, "T"))[1]
    await first.runtime.cache.flush()

    purge = await second.admin.post("/purge", json={"route": "select"}, headers=AUTH)

    assert purge.status == 200
    assert await _ask(second, "T") == (STORED, stored_before + 1)

    async def first_forgot() -> bool:
        return (await _ask(first, "T"))[1] != stored_before

    await wait_until(first_forgot, timeout=2)


async def test_with_an_unresolvable_redis_url_l1_still_caches(run_sidecache, upstream):
    sidecar = await run_sidecache(
        {
            "upstream": {"url": upstream.url},
            "cache": {"l2": {"url": "redis://sidecache-no-such-host.invalid:6379/0"}},
            "routes": DEFAULT_ROUTES,
            "monitor": {"enabled": False},
        }
    )
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(2):
            async with session.post(f"{sidecar.url}{SELECT}", json={"task": "T"}) as r:
                statuses.append(r.headers["Cache-Status"])
        async with session.get(f"{sidecar.admin_url}/readyz") as r:
            ready = await r.json()
    assert statuses == [STORED, HIT_L1]
    assert upstream.calls[SELECT] == 1
    assert ready["invalidation"] == "down"
