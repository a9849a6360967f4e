"""The semantic tier through the proxy: paraphrased searches answered, near-misses not."""

import asyncio
import uuid

import pytest

from examples.embedded import PostgresServer
from tests.upstream import echo_of

SEARCH = "/search"


def semantic_config(dsn: str, **store) -> dict:
    return {
        "cache": {
            "semantic": {
                "dsn": dsn,
                "table": f"sem_{uuid.uuid4().hex[:10]}",
                "connect_timeout": "1s",
                "command_timeout": "1s",
                "breaker": {"failures": 1, "open_for": "200ms"},
                **store,
            }
        },
        "routes": [{"name": "search", "path": SEARCH, "semantic": {"field": "query"}}],
    }


@pytest.fixture
async def proxy(make_proxy, upstream, pg_dsn):
    return await make_proxy(**semantic_config(pg_dsn))


async def search(proxy, query: str, headers=None, **fields):
    response = await proxy.client.post(SEARCH, json={"query": query, **fields}, headers=headers)
    assert response.status == 200
    return response


async def stored(proxy, query: str, headers=None, **fields) -> None:
    """Ask once (a miss) and wait until the semantic row is written."""
    await search(proxy, query, headers, **fields)
    await proxy.runtime.cache.flush()


async def test_a_paraphrased_search_is_answered_from_the_semantic_tier(proxy, upstream):
    await stored(proxy, "how to configure rate limiting on the API gateway")
    response = await search(proxy, "API gateway rate limit configuration")
    assert response.headers["Cache-Status"] == "sidecache; hit; detail=semantic"
    assert 0 < float(response.headers["Sidecache-Similarity"]) <= 1
    assert echo_of(await response.read())["n"] == 1
    assert upstream.calls[SEARCH] == 1


async def test_a_semantic_hit_is_then_an_l1_hit_for_the_same_text(proxy, upstream):
    await stored(proxy, "how to configure rate limiting on the API gateway")
    await search(proxy, "API gateway rate limit configuration")
    again = await search(proxy, "API gateway rate limit configuration")
    assert again.headers["Cache-Status"] == "sidecache; hit; detail=l1"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Where is my order #48213?", "Where is my order #48231?"),
        ("invoices from March 2024", "invoices from April 2024"),
        ("how to enable two-factor authentication", "how to disable two-factor authentication"),
        ("refund my last payment", "charge my last payment"),
        ("laptops that support Linux", "laptops that do not support Linux"),
        ("export contacts to CSV", "import contacts to CSV"),
    ],
    ids=["number", "date", "opposite-action", "refund-charge", "negation", "import-export"],
)
async def test_a_near_miss_is_not_answered_from_the_semantic_tier(proxy, upstream, first, second):
    await stored(proxy, first)
    response = await search(proxy, second)
    assert response.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert upstream.calls[SEARCH] == 2


async def test_other_body_fields_must_match_exactly(proxy, upstream):
    await stored(proxy, "how to configure rate limiting on the API gateway", top_k=5)
    response = await search(proxy, "API gateway rate limit configuration", top_k=10)
    assert response.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_tenants_never_share_semantic_answers(proxy, upstream):
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    await stored(proxy, "how to configure rate limiting on the API gateway", alice)
    response = await search(proxy, "API gateway rate limit configuration", bob)
    assert response.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
    assert echo_of(await response.read())["headers"]["Authorization"] == "Bearer bob"


async def test_purge_by_route_removes_semantic_rows(proxy, upstream, monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", "t")
    await stored(proxy, "how to configure rate limiting on the API gateway")
    auth = {"Authorization": "Bearer t"}
    response = await proxy.admin.post("/purge", json={"route": "search"}, headers=auth)
    assert (await response.json())["purged"]["semantic"] == 1
    again = await search(proxy, "API gateway rate limit configuration")
    assert again.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_postgres_stopped_mid_test_fails_no_request(make_proxy, upstream):
    server = PostgresServer().start()
    try:
        proxy = await make_proxy(**semantic_config(server.dsn))
        await stored(proxy, "how to configure rate limiting on the API gateway")
        await asyncio.to_thread(server.stop)
        statuses = [
            (await proxy.client.post(SEARCH, json={"query": f"question {i}"})).status
            for i in range(10)
        ]
        assert statuses == [200] * 10
        assert not proxy.runtime.semantic.available
        ready = await (await proxy.admin.get("/readyz")).json()
        assert ready["tiers"]["semantic"] == "unavailable"
    finally:
        await asyncio.to_thread(server.close)


async def test_purge_by_request_removes_that_querys_semantic_row(proxy, upstream, monkeypatch):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", "t")
    await stored(proxy, "how to configure rate limiting on the API gateway")
    request = {
        "method": "POST",
        "path": SEARCH,
        "body": {"query": "how to configure rate limiting on the API gateway"},
    }
    auth = {"Authorization": "Bearer t"}
    response = await proxy.admin.post("/purge", json={"request": request}, headers=auth)
    assert (await response.json())["purged"]["semantic"] == 1
    again = await search(proxy, "API gateway rate limit configuration")
    assert again.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
