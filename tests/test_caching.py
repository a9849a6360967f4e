"""Exact-match caching: keys, tenants, tiers, cacheability rules, Cache-Status and Age."""

import asyncio

import pytest
import redis.asyncio as redis

from core.config import L1Config
from core.entry import CachedResponse
from core.tiers.memory import MemoryTier
from tests.conftest import age_l1_entries
from tests.upstream import Canned, echo_of

SELECT_PATH = "/agents/select"


async def test_a_repeated_request_is_answered_from_l1(make_proxy, upstream):
    proxy = await make_proxy()
    first = await proxy.client.post("/agents/select", json={"task": "refund", "request_id": "a"})
    second = await proxy.client.post("/agents/select", json={"request_id": "b", "task": "refund"})
    assert first.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert second.headers["Age"] == "0"
    assert await second.read() == await first.read()
    assert upstream.calls["/agents/select"] == 1


async def test_json_key_order_and_whitespace_do_not_matter(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", data=b'{"task": "x", "top_k": 3}')
    second = await proxy.client.post("/agents/select", data=b'{ "top_k":3,"task":"x" }')
    assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert upstream.calls["/agents/select"] == 1


async def test_different_bodies_are_different_entries(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "x", "top_k": 3})
    second = await proxy.client.post("/agents/select", json={"task": "x", "top_k": 4})
    assert second.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert upstream.calls["/agents/select"] == 2


async def test_a_body_that_is_not_json_is_keyed_by_its_bytes_and_cached(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", data=b"task=refund&lang=en")
    same = await proxy.client.post("/agents/select", data=b"task=refund&lang=en")
    other = await proxy.client.post("/agents/select", data=b"task=refund&lang=fr")
    assert same.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert other.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_two_tenants_never_share_an_entry(make_proxy, upstream):
    proxy = await make_proxy()
    body = {"task": "refund"}
    alice = await proxy.client.post("/agents/select", json=body, headers={"Authorization": "A"})
    bob = await proxy.client.post("/agents/select", json=body, headers={"Authorization": "B"})
    alice_again = await proxy.client.post(
        "/agents/select", json=body, headers={"Authorization": "A"}
    )
    assert bob.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert echo_of(await bob.read())["headers"]["Authorization"] == "B"
    assert alice_again.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert echo_of(await alice_again.read())["headers"]["Authorization"] == "A"
    assert upstream.calls["/agents/select"] == 2
    assert alice.status == 200


async def test_vary_headers_are_part_of_the_key(make_proxy, upstream):
    routes = [{"name": "select", "path": "/agents/select", "vary": ["X-Agent-Pool"]}]
    proxy = await make_proxy(routes=routes)
    await proxy.client.post("/agents/select", json={}, headers={"X-Agent-Pool": "eu"})
    us = await proxy.client.post("/agents/select", json={}, headers={"X-Agent-Pool": "us"})
    eu = await proxy.client.post("/agents/select", json={}, headers={"X-Agent-Pool": "eu"})
    assert us.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert eu.headers["Cache-Status"] == "sidecache; hit; detail=l1"


async def test_a_get_route_caches_by_path_and_normalised_query(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.get("/catalog/agents?b=2&a=1")
    same = await proxy.client.get("/catalog/agents?a=1&b=2")
    other = await proxy.client.get("/catalog/agents?a=1&b=3")
    assert same.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert other.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_age_counts_seconds_since_the_entry_was_stored(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "aged"})
    age_l1_entries(proxy.runtime, 42)
    response = await proxy.client.post("/agents/select", json={"task": "aged"})
    assert response.headers["Age"] in ("42", "43")


async def test_an_expired_entry_is_not_served(make_proxy, upstream):
    routes = [{"name": "select", "path": "/agents/select", "ttl": "50ms"}]
    proxy = await make_proxy(routes=routes)
    await proxy.client.post("/agents/select", json={"task": "x"})
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        response = await proxy.client.post("/agents/select", json={"task": "x"})
        if response.headers["Cache-Status"].startswith("sidecache; fwd=miss"):
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert upstream.calls["/agents/select"] >= 2


# --- L1 bounds ---------------------------------------------------------------------------


def _entry(size: int) -> CachedResponse:
    return CachedResponse(200, (), b"x" * size, ttl=60)


def test_l1_never_holds_more_bytes_than_its_bound():
    l1 = MemoryTier(L1Config(max_entries=1000, max_bytes=10_000))
    for i in range(100):
        l1.set_nowait(f"k{i}", _entry(1000))
    assert l1.bytes <= 10_000
    assert len(l1) < 10
    assert l1.get_nowait("k99") is not None  # the most recent survive
    assert l1.get_nowait("k0") is None


def test_l1_never_holds_more_entries_than_its_bound():
    l1 = MemoryTier(L1Config(max_entries=5, max_bytes=10**9))
    for i in range(20):
        l1.set_nowait(f"k{i}", _entry(10))
    assert len(l1) == 5


def test_l1_evicts_the_least_recently_used_entry():
    l1 = MemoryTier(L1Config(max_entries=3, max_bytes=10**9))
    for key in ("a", "b", "c"):
        l1.set_nowait(key, _entry(10))
    l1.get_nowait("a")
    l1.set_nowait("d", _entry(10))
    assert l1.get_nowait("b") is None
    assert l1.get_nowait("a") is not None


def test_an_entry_bigger_than_l1_is_not_stored():
    l1 = MemoryTier(L1Config(max_entries=10, max_bytes=1000))
    assert l1.set_nowait("big", _entry(5000)) is False
    assert len(l1) == 0


async def test_l1_byte_bound_holds_through_the_proxy(make_proxy, upstream):
    proxy = await make_proxy(cache={"l1": {"max_bytes": "4KiB"}})
    for i in range(50):
        await proxy.client.post("/agents/select", json={"task": f"task {i}"})
    assert 0 < proxy.runtime.l1.bytes <= 4096


# --- L2 ----------------------------------------------------------------------------------


async def test_an_l2_hit_is_promoted_into_l1(make_proxy, upstream, redis_url):
    service = {"Host": "agents.internal"}  # both replicas behind one Service name
    writer = await make_proxy(cache={"l2": {"url": redis_url}})
    await writer.client.post("/agents/select", json={"task": "shared"}, headers=service)
    await writer.runtime.cache.flush()
    reader = await make_proxy(cache={"l2": {"url": redis_url}})
    from_l2 = await reader.client.post("/agents/select", json={"task": "shared"}, headers=service)
    from_l1 = await reader.client.post("/agents/select", json={"task": "shared"}, headers=service)
    assert from_l2.headers["Cache-Status"] == "sidecache; hit; detail=l2"
    assert from_l1.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert await from_l2.read() == await from_l1.read()
    assert upstream.calls["/agents/select"] == 1


async def test_l2_only_when_l1_is_disabled(make_proxy, upstream, redis_url):
    proxy = await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": redis_url}})
    await proxy.client.post("/agents/select", json={"task": "l2 only"})
    await proxy.runtime.cache.flush()
    response = await proxy.client.post("/agents/select", json={"task": "l2 only"})
    assert response.headers["Cache-Status"] == "sidecache; hit; detail=l2"


async def test_an_unreadable_l2_entry_is_dropped_and_counted_not_served(
    make_proxy, upstream, redis_url
):
    proxy = await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": redis_url}})
    await proxy.client.post("/agents/select", json={"task": "corrupt"})
    await proxy.runtime.cache.flush()
    l2 = proxy.runtime.l2
    entries = l2.client.scan_iter(match=l2._prefix + "*")
    (key,) = [k async for k in entries if b":tag:" not in k]
    await l2.client.set(key, b"\x80\x04garbage that is not an entry")
    response = await proxy.client.post("/agents/select", json={"task": "corrupt"})
    assert response.headers["Cache-Status"].startswith("sidecache; fwd=miss")
    assert proxy.runtime.metrics.corrupt_entries.labels("l2")._value.get() == 1
    assert upstream.calls["/agents/select"] == 2


# --- cacheability ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Set-Cookie": "session=1"},
        {"Cache-Control": "no-store"},
        {"Cache-Control": "private, max-age=60"},
    ],
    ids=["set-cookie", "no-store", "private"],
)
async def test_responses_the_upstream_marks_personal_are_not_stored(make_proxy, upstream, headers):
    upstream.canned["/agents/select"] = Canned(200, headers, b'{"agent": "billing"}')
    proxy = await make_proxy()
    first = await proxy.client.post("/agents/select", json={"task": "x"})
    second = await proxy.client.post("/agents/select", json={"task": "x"})
    assert first.headers["Cache-Status"] == "sidecache; fwd=miss"
    assert second.headers["Cache-Status"] == "sidecache; fwd=miss"
    assert upstream.calls["/agents/select"] == 2


async def test_a_status_outside_the_route_list_is_not_stored(make_proxy, upstream):
    upstream.canned["/agents/select"] = Canned(500, {}, b'{"error": "boom"}')
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "x"})
    second = await proxy.client.post("/agents/select", json={"task": "x"})
    assert second.status == 500
    assert upstream.calls["/agents/select"] == 2


async def test_configured_statuses_are_stored(make_proxy, upstream):
    upstream.canned["/agents/select"] = Canned(404, {}, b'{"error": "no agent"}')
    routes = [{"name": "select", "path": "/agents/select", "statuses": [200, 404]}]
    proxy = await make_proxy(routes=routes)
    await proxy.client.post("/agents/select", json={"task": "x"})
    second = await proxy.client.post("/agents/select", json={"task": "x"})
    assert (second.status, second.headers["Cache-Status"]) == (404, "sidecache; hit; detail=l1")


async def test_a_request_with_no_store_bypasses_the_cache(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "x"})
    response = await proxy.client.post(
        "/agents/select", json={"task": "x"}, headers={"Cache-Control": "no-store"}
    )
    assert response.headers["Cache-Status"] == "sidecache; fwd=bypass"
    assert upstream.calls["/agents/select"] == 2


async def test_a_request_with_no_cache_skips_the_lookup_but_stores_the_answer(make_proxy, upstream):
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={"task": "x"})
    refreshed = await proxy.client.post(
        "/agents/select", json={"task": "x"}, headers={"Cache-Control": "no-cache"}
    )
    after = await proxy.client.post("/agents/select", json={"task": "x"})
    assert refreshed.headers["Cache-Status"] == "sidecache; fwd=request; stored"
    assert echo_of(await after.read())["n"] == 2  # the refreshed answer replaced the old one
    assert after.headers["Cache-Status"] == "sidecache; hit; detail=l1"


async def test_a_request_body_over_the_key_size_limit_bypasses(make_proxy, upstream):
    routes = [{"name": "select", "path": "/agents/select", "max_body_size": "1KiB"}]
    proxy = await make_proxy(routes=routes)
    body = {"task": "x" * 2000}
    await proxy.client.post("/agents/select", json=body)
    second = await proxy.client.post("/agents/select", json=body)
    assert second.headers["Cache-Status"] == "sidecache; fwd=bypass"
    assert upstream.calls["/agents/select"] == 2


@pytest.mark.parametrize("chunked", ["0", "1"], ids=["content-length", "chunked"])
async def test_a_response_over_the_entry_size_limit_is_streamed_not_stored(
    make_proxy, upstream, chunked
):
    proxy = await make_proxy()
    size = 256 * 1024  # the catalog route allows 64KiB entries
    url = f"/catalog/big?size={size}&chunked={chunked}"
    first = await proxy.client.get(url)
    second = await proxy.client.get(url)
    assert len(await first.read()) == size
    assert len(await second.read()) == size
    assert first.headers["Cache-Status"] == "sidecache; fwd=miss; detail=stream"
    assert upstream.calls["/catalog/big"] == 2


async def test_an_encoded_response_is_stored_only_when_keyed_by_accept_encoding(
    make_proxy, upstream
):
    upstream.canned[SELECT_PATH] = Canned(200, {"Content-Encoding": "gzip"}, b"\x1f\x8b")
    plain = await make_proxy()
    keyed = await make_proxy(
        routes=[{"name": "select", "path": SELECT_PATH, "vary": ["Accept-Encoding"]}]
    )
    for proxy in (plain, keyed):
        await proxy.client.post(SELECT_PATH, json={}, headers={"Accept-Encoding": "gzip"})
    again = [
        await p.client.post(SELECT_PATH, json={}, headers={"Accept-Encoding": "gzip"})
        for p in (plain, keyed)
    ]
    assert again[0].headers["Cache-Status"] == "sidecache; fwd=miss"
    assert again[1].headers["Cache-Status"] == "sidecache; hit; detail=l1"


async def test_a_response_varying_on_an_unkeyed_header_is_not_stored(make_proxy, upstream):
    upstream.canned["/agents/select"] = Canned(200, {"Vary": "X-Locale"}, b"{}")
    proxy = await make_proxy()
    await proxy.client.post("/agents/select", json={})
    second = await proxy.client.post("/agents/select", json={})
    assert second.headers["Cache-Status"] == "sidecache; fwd=miss"


async def test_headers_the_upstream_names_in_connection_are_neither_stored_nor_replayed(
    make_proxy, upstream
):
    hop = {"Connection": "keep-alive, X-Hop-Only", "X-Hop-Only": "for this hop"}
    upstream.canned[SELECT_PATH] = Canned(200, hop, b"{}")
    proxy = await make_proxy()
    miss = await proxy.client.post(SELECT_PATH, json={})
    hit = await proxy.client.post(SELECT_PATH, json={})
    assert hit.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert "X-Hop-Only" not in miss.headers
    assert "X-Hop-Only" not in hit.headers


# --- single-flight covers the whole miss ----------------------------------------------------


async def test_a_miss_whose_lookups_outlast_another_fetch_of_its_key_makes_no_second_call(
    make_proxy, upstream, redis_server
):
    """A request stuck in a slow Redis lookup while another request fetches and stores the
    same key is answered from what was stored, not with a second upstream call."""
    proxy = await make_proxy(cache={"l2": {"url": redis_server.url, "timeout": "10s"}})
    pauser = redis.Redis.from_url(redis_server.url)
    await pauser.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # lookups wait 3 s
    try:
        slow = asyncio.ensure_future(proxy.client.post(SELECT_PATH, json={"task": "x"}))
        fresh = {"Cache-Control": "no-cache"}  # no lookup: straight to the upstream
        first = await proxy.client.post(SELECT_PATH, json={"task": "x"}, headers=fresh)
        assert not slow.done()
        second = await slow
    finally:
        await pauser.aclose()

    assert first.headers["Cache-Status"] == "sidecache; fwd=request; stored"
    assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert upstream.calls[SELECT_PATH] == 1


async def test_a_miss_asks_redis_once(make_proxy, upstream, redis_server):
    proxy = await make_proxy(cache={"l2": {"url": redis_server.url}})
    stats = redis.Redis.from_url(redis_server.url)
    await proxy.client.post(SELECT_PATH, json={"task": "warm the connection"})
    await proxy.runtime.cache.flush()
    before = await _reads(stats)

    await proxy.client.post(SELECT_PATH, json={"task": "never seen"})

    assert await _reads(stats) - before == 1
    await stats.aclose()


async def _reads(client: redis.Redis) -> int:
    """GET and MGET commands Redis has served so far."""
    info = await client.info("commandstats")
    return sum(info.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget"))
