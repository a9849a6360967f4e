"""POST /purge on the admin port: by request, route, tag and all; auth; validation."""

import asyncio
import uuid

import pytest

from tests.upstream import echo_of

SELECT = "/agents/select"
TOKEN = "s3cret-admin-token"


@pytest.fixture
def admin_token(monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", TOKEN)
    return {"Authorization": f"Bearer {TOKEN}"}


async def _status(proxy, body, headers=None) -> str:
    response = await proxy.client.post(SELECT, json=body, headers=headers)
    return response.headers["Cache-Status"]


async def test_purge_by_request_drops_exactly_that_entry(make_proxy, upstream, admin_token):
    proxy = await make_proxy()
    await proxy.client.post(SELECT, json={"task": "a"}, headers={"Authorization": "tenant-1"})
    await proxy.client.post(SELECT, json={"task": "b"}, headers={"Authorization": "tenant-1"})
    purge = {
        "request": {
            "method": "POST",
            "path": SELECT,
            "headers": {"Authorization": "tenant-1"},
            "body": {"task": "a", "request_id": "ignored like in the key"},
        }
    }
    response = await proxy.admin.post("/purge", json=purge, headers=admin_token)
    assert response.status == 200
    assert (await response.json())["purged"]["l1"] == 1
    tenant = {"Authorization": "tenant-1"}
    assert await _status(proxy, {"task": "a"}, tenant) == "sidecache; fwd=miss; stored"
    assert await _status(proxy, {"task": "b"}, tenant) == "sidecache; hit; detail=l1"


async def test_purge_by_route_drops_every_entry_of_that_route_only(
    make_proxy, upstream, admin_token, redis_url
):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    for i in range(3):
        await proxy.client.post(SELECT, json={"task": i})
    await proxy.client.post("/search", json={"query": "q"})
    await proxy.runtime.cache.flush()

    response = await proxy.admin.post("/purge", json={"route": "select"}, headers=admin_token)
    report = (await response.json())["purged"]

    assert report["l1"] == 3
    assert report["generation"] == 1
    for i in range(3):
        assert await _status(proxy, {"task": i}) == "sidecache; fwd=miss; stored"
    search = await proxy.client.post("/search", json={"query": "q"})
    assert search.headers["Cache-Status"] == "sidecache; hit; detail=l1"


async def test_purge_by_tag_drops_entries_tagged_by_the_upstream(
    make_proxy, upstream, admin_token, redis_url
):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    tagged = {"X-Echo-Surrogate-Key": "agents billing"}
    other = {"X-Echo-Surrogate-Key": "search"}
    await proxy.client.post(SELECT, json={"task": "t1"}, headers=tagged)
    await proxy.client.post(SELECT, json={"task": "t2"}, headers=other)
    await proxy.runtime.cache.flush()

    response = await proxy.admin.post("/purge", json={"tag": "billing"}, headers=admin_token)
    report = (await response.json())["purged"]

    assert (report["l1"], report["l2"]) == (1, 1)
    assert await _status(proxy, {"task": "t1"}, tagged) == "sidecache; fwd=miss; stored"
    assert await _status(proxy, {"task": "t2"}, other) == "sidecache; hit; detail=l1"


@pytest.mark.parametrize(
    ("purge", "kept"),
    [
        ({"tag": "billing"}, False),
        ({"route": "select"}, False),
        ({"all": True}, False),
        ({"tag": "another tag"}, True),
    ],
)
async def test_an_answer_fetched_while_a_purge_named_it_is_not_stored(
    make_proxy, upstream, admin_token, purge, kept
):
    """The upstream may have answered from before the change the purge is for: an answer
    in flight across a purge that names it is relayed but not kept."""
    proxy = await make_proxy()
    tagged = {"X-Echo-Surrogate-Key": "billing"}
    upstream.hold = asyncio.Event()
    pending = asyncio.ensure_future(proxy.client.post(SELECT, json={"task": "t"}, headers=tagged))
    await asyncio.wait_for(upstream.holding.wait(), 10)
    response = await proxy.admin.post("/purge", json=purge, headers=admin_token)
    assert response.status == 200
    upstream.hold.set()

    answered = await asyncio.wait_for(pending, 10)
    assert answered.status == 200
    stored = "sidecache; fwd=miss; stored"
    assert answered.headers["Cache-Status"] == (stored if kept else "sidecache; fwd=miss")
    assert await _status(proxy, {"task": "t"}, tagged) == (
        "sidecache; hit; detail=l1" if kept else stored
    )


async def test_cache_tag_header_values_are_tags_too(make_proxy, upstream, admin_token):
    from tests.upstream import Canned

    upstream.canned[SELECT] = Canned(200, {"Cache-Tag": "alpha,beta"}, b"{}")
    proxy = await make_proxy()
    await proxy.client.post(SELECT, json={})
    response = await proxy.admin.post("/purge", json={"tag": "beta"}, headers=admin_token)
    assert (await response.json())["purged"]["l1"] == 1


async def test_purge_all_empties_every_tier(make_proxy, upstream, admin_token, redis_url):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    await proxy.client.post(SELECT, json={"task": 1})
    await proxy.client.post("/search", json={"query": "q"})
    await proxy.runtime.cache.flush()
    response = await proxy.admin.post("/purge", json={"all": True}, headers=admin_token)
    report = (await response.json())["purged"]
    assert (report["l1"], report["l2"]) == (2, 2)
    assert await _status(proxy, {"task": 1}) == "sidecache; fwd=miss; stored"


async def test_purge_all_leaves_keys_that_only_a_glob_reading_of_the_prefix_would_match(
    make_proxy, upstream, admin_token, redis_url
):
    """SCAN MATCH is a glob: a prefix holding ``[ab]`` must be matched literally."""
    unique = uuid.uuid4().hex[:8]
    globby = await make_proxy(cache={"l2": {"url": redis_url, "key_prefix": f"{unique}[ab]:"}})
    l2_only = {"l1": {"enabled": False}, "l2": {"url": redis_url, "key_prefix": f"{unique}a:"}}
    plain = await make_proxy(cache=l2_only)
    for proxy in (globby, plain):
        await proxy.client.post(SELECT, json={"task": 1})
        await proxy.runtime.cache.flush()

    response = await globby.admin.post("/purge", json={"all": True}, headers=admin_token)

    assert (await response.json())["purged"]["l2"] == 1
    assert await _status(plain, {"task": 1}) == "sidecache; hit; detail=l2"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Basic x"}, 401)],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_purge_without_the_right_token_is_refused_and_purges_nothing(
    make_proxy, upstream, admin_token, headers, status
):
    proxy = await make_proxy()
    await proxy.client.post(SELECT, json={"task": "keep"})
    response = await proxy.admin.post("/purge", json={"all": True}, headers=headers)
    assert response.status == status
    assert await _status(proxy, {"task": "keep"}) == "sidecache; hit; detail=l1"


async def test_without_a_token_purge_is_refused_unless_admin_listens_on_loopback(
    make_proxy, upstream, monkeypatch
):
    monkeypatch.delenv("SIDECACHE_ADMIN_TOKEN", raising=False)
    public = await make_proxy(server={"admin_host": "0.0.0.0"})
    loopback = await make_proxy(server={"admin_host": "127.0.0.1"})
    refused = await public.admin.post("/purge", json={"all": True})
    allowed = await loopback.admin.post("/purge", json={"all": True})
    assert refused.status == 403
    assert allowed.status == 200


async def test_the_token_variable_can_be_renamed(make_proxy, upstream, monkeypatch):
    monkeypatch.setenv("MY_PURGE_TOKEN", "abc")
    proxy = await make_proxy(admin={"token_env": "MY_PURGE_TOKEN"})
    response = await proxy.admin.post(
        "/purge", json={"all": True}, headers={"Authorization": "Bearer abc"}
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"everything": True}, "everything: unknown field"),
        ({"all": True, "tag": "x"}, "body: expected exactly one of"),
        ({"all": "yes"}, "all: expected true"),
        ({"route": "nope"}, 'route: no route named "nope"'),
        ({"tag": ""}, "tag: expected a non-empty string"),
        ({"request": {"path": SELECT, "bodyy": {}}}, "request.bodyy: unknown field"),
        ({"request": {"method": "POST", "path": "/nowhere"}}, "request.path: no cached route"),
        ({"request": {"path": SELECT, "headers": {"a": 1}}}, "request.headers: expected"),
    ],
)
async def test_a_bad_purge_body_is_a_400_naming_the_field(
    make_proxy, upstream, admin_token, body, message
):
    proxy = await make_proxy()
    response = await proxy.admin.post("/purge", json=body, headers=admin_token)
    assert response.status == 400
    assert (await response.json())["error"].startswith(message)


async def test_a_purge_body_that_is_not_json_is_a_400(make_proxy, upstream, admin_token):
    proxy = await make_proxy()
    response = await proxy.admin.post("/purge", data=b"{nope", headers=admin_token)
    assert response.status == 400
    assert (await response.json())["error"].startswith("body: not valid JSON")


async def test_a_purge_while_redis_is_down_says_it_is_incomplete(
    make_proxy, upstream, admin_token, redis_server
):
    proxy = await make_proxy(cache={"l2": {"url": redis_server.url}})
    await proxy.client.post(SELECT, json={"task": 1})
    redis_server.kill()
    response = await proxy.admin.post("/purge", json={"all": True}, headers=admin_token)
    body = await response.json()
    assert response.status == 503
    assert body["purged"]["errors"]
    assert echo_of(await (await proxy.client.post(SELECT, json={"task": 1})).read())["n"] == 2


async def test_stats_report_hits_misses_and_savings_per_route_and_tier(
    make_proxy, upstream, redis_url
):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    for _ in range(4):
        await proxy.client.post(SELECT, json={"task": "popular"})
    await proxy.client.post(SELECT, json={"task": "rare"})
    stats = await (await proxy.admin.get("/stats")).json()
    select = stats["routes"]["select"]
    assert (select["requests"], select["hits"], select["misses"]) == (5, 3, 2)
    assert select["hit_ratio"] == pytest.approx(0.6)
    assert select["upstream_calls_saved"] == 3
    assert select["by_tier"] == {"l1": 3, "l2": 0, "semantic": 0}
    assert stats["tiers"]["l1"]["entries"] == 2
    assert stats["tiers"]["l1"]["bytes"] > 0
    assert stats["tiers"]["l2"]["available"] is True
    assert stats["latency_ms"]["hit"]["p50"] is not None


async def test_a_request_keyed_by_the_fast_front_end_before_a_route_purge_is_keyed_again(
    make_proxy, upstream, admin_token, redis_url
):
    """The fast front end hands the engine the route and key it found; a purge of the route
    in between (its generation moved on) makes the engine key the request anew, or it would
    reach the purged entry still in Redis under the old generation."""
    from multidict import CIMultiDict

    from proxy.engine import Engine
    from proxy.exchange import BufferedBody, Request

    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    engine = Engine(proxy.runtime)
    headers = CIMultiDict({"Host": "agents.internal", "Content-Type": "application/json"})
    body = b'{"task": "keyed"}'
    keyed = engine.fast_key(body, "POST", SELECT, SELECT, headers, body, "127.0.0.1")
    assert keyed is not None

    def request() -> Request:
        target = engine.target(SELECT, headers, "http", "127.0.0.1")
        return Request("POST", SELECT, target, headers, "127.0.0.1", BufferedBody(body), keyed)

    assert (await engine.handle(request())).outcome.cache_status == "sidecache; fwd=miss; stored"
    await proxy.runtime.cache.flush()
    purged = await proxy.admin.post("/purge", json={"route": "select"}, headers=admin_token)
    assert purged.status == 200

    again = await engine.handle(request())
    assert again.outcome.cache_status == "sidecache; fwd=miss; stored"
