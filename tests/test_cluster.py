"""Redis Cluster carries L2 and purges (a real 3-node cluster on loopback)."""

import pytest

SELECT = "/agents/select"
AUTH = {"Authorization": "Bearer cluster-token"}


@pytest.fixture
def admin_token(monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", "cluster-token")


async def _l2_only(make_proxy, url):
    return await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": url}})


async def test_l2_on_a_cluster_stores_and_serves_entries_across_slots(
    make_proxy, upstream, redis_cluster
):
    proxy = await _l2_only(make_proxy, redis_cluster)
    tasks = [f"task {i}" for i in range(30)]  # 30 keys land on all three nodes
    for task in tasks:
        await proxy.client.post(SELECT, json={"task": task})
    await proxy.runtime.cache.flush()
    statuses = [
        (await proxy.client.post(SELECT, json={"task": task})).headers["Cache-Status"]
        for task in tasks
    ]
    assert set(statuses) == {"sidecache; hit; detail=l2"}
    assert upstream.calls[SELECT] == 30


@pytest.mark.parametrize("purge", [{"tag": "t"}, {"route": "select"}, {"all": True}])
async def test_purges_work_on_a_cluster(make_proxy, upstream, redis_cluster, admin_token, purge):
    proxy = await _l2_only(make_proxy, redis_cluster)
    tagged = {"X-Echo-Surrogate-Key": "t"}
    for i in range(10):
        await proxy.client.post(SELECT, json={"task": i}, headers=tagged)
    await proxy.runtime.cache.flush()

    response = await proxy.admin.post("/purge", json=purge, headers=AUTH)

    assert response.status == 200, await response.text()
    for i in range(10):
        again = await proxy.client.post(SELECT, json={"task": i}, headers=tagged)
        assert again.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_the_cluster_url_scheme_and_the_cluster_flag_both_select_the_cluster_client(
    make_proxy, upstream, redis_cluster
):
    plain_url = redis_cluster.replace("redis+cluster://", "redis://")
    by_flag = await make_proxy(cache={"l2": {"url": plain_url, "cluster": True}})
    by_scheme = await make_proxy(cache={"l2": {"url": redis_cluster}})
    assert type(by_flag.runtime.l2.client).__name__ == "RedisCluster"
    assert type(by_scheme.runtime.l2.client).__name__ == "RedisCluster"
