"""Stale-while-revalidate, stale-if-error and refresh-ahead."""

import asyncio
import json

from tests.conftest import age_l1_entries
from tests.upstream import Canned, echo_of

SELECT = "/agents/select"


def route(**options) -> list[dict]:
    return [{"name": "select", "path": SELECT, "ttl": "10s", **options}]


async def test_a_stale_entry_is_served_while_one_refresh_reaches_the_upstream(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_while_revalidate="1m"))
    await proxy.client.post(SELECT, json={"task": "hot"})
    age_l1_entries(proxy.runtime, 11)
    upstream.delay = 0.3

    responses = await asyncio.gather(
        *(proxy.client.post(SELECT, json={"task": "hot"}) for _ in range(50))
    )

    assert {r.headers["Cache-Status"] for r in responses} == {
        "sidecache; hit; fwd=stale; detail=l1"
    }
    assert {echo_of(await r.read())["n"] for r in responses} == {1}
    await proxy.runtime.refreshes.wait(timeout=5)
    assert upstream.calls[SELECT] == 2
    fresh = await proxy.client.post(SELECT, json={"task": "hot"})
    assert fresh.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert echo_of(await fresh.read())["n"] == 2


async def test_the_upstreams_stale_while_revalidate_directive_is_honoured(make_proxy, upstream):
    upstream.canned[SELECT] = Canned(
        200, {"Cache-Control": "max-age=10, stale-while-revalidate=60"}, b'{"v": 1}'
    )
    proxy = await make_proxy(routes=route())
    await proxy.client.post(SELECT, json={})
    age_l1_entries(proxy.runtime, 11)
    stale = await proxy.client.post(SELECT, json={})
    assert stale.headers["Cache-Status"] == "sidecache; hit; fwd=stale; detail=l1"


async def test_past_every_window_an_entry_is_a_miss(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_while_revalidate="5s"))
    await proxy.client.post(SELECT, json={})
    age_l1_entries(proxy.runtime, 11)  # 1 s past the TTL: inside the window
    age_l1_entries(proxy.runtime, 5)  # 6 s past: outside
    response = await proxy.client.post(SELECT, json={})
    assert response.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_stale_if_error_answers_for_a_stopped_upstream(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_if_error="1h"))
    await proxy.client.post(SELECT, json={"task": "x"})
    age_l1_entries(proxy.runtime, 60)
    await upstream.stop()
    response = await proxy.client.post(SELECT, json={"task": "x"})
    assert response.status == 200
    assert response.headers["Cache-Status"] == "sidecache; fwd=stale; detail=stale-if-error-l1"
    assert echo_of(await response.read())["n"] == 1
    assert int(response.headers["Age"]) >= 60


async def test_stale_if_error_answers_for_an_upstream_5xx(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_if_error="1h"))
    await proxy.client.post(SELECT, json={"task": "x"})
    age_l1_entries(proxy.runtime, 60)
    upstream.canned[SELECT] = Canned(503, {}, b'{"error": "down for maintenance"}')
    response = await proxy.client.post(SELECT, json={"task": "x"})
    assert response.status == 200
    assert response.headers["Cache-Status"] == "sidecache; fwd=stale; detail=stale-if-error-l1"


async def test_stale_if_error_answers_for_an_upstream_timeout(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_if_error="1h"), upstream={"timeout": "200ms"})
    await proxy.client.post(SELECT, json={"task": "x"})
    age_l1_entries(proxy.runtime, 60)
    upstream.delay = 3
    response = await proxy.client.post(SELECT, json={"task": "x"})
    assert response.status == 200
    assert response.headers["Cache-Status"] == "sidecache; fwd=stale; detail=stale-if-error-l1"


async def test_a_stale_if_error_entry_is_replaced_when_the_upstream_answers(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_if_error="1h"))
    await proxy.client.post(SELECT, json={"task": "x"})
    age_l1_entries(proxy.runtime, 60)
    response = await proxy.client.post(SELECT, json={"task": "x"})
    assert response.headers["Cache-Status"] == "sidecache; fwd=stale; stored"
    assert echo_of(await response.read())["n"] == 2


async def test_outside_the_stale_if_error_window_the_error_goes_through(make_proxy, upstream):
    proxy = await make_proxy(routes=route(stale_if_error="30s"))
    await proxy.client.post(SELECT, json={"task": "x"})
    age_l1_entries(proxy.runtime, 60)
    await upstream.stop()
    response = await proxy.client.post(SELECT, json={"task": "x"})
    assert response.status == 502
    assert json.loads(await response.read())["error"] == "upstream_unreachable"


async def test_the_upstreams_stale_if_error_directive_is_honoured(make_proxy, upstream):
    upstream.canned[SELECT] = Canned(200, {"Cache-Control": "stale-if-error=3600"}, b"{}")
    proxy = await make_proxy(routes=route())
    await proxy.client.post(SELECT, json={})
    age_l1_entries(proxy.runtime, 60)
    await upstream.stop()
    response = await proxy.client.post(SELECT, json={})
    assert response.status == 200


async def test_refresh_ahead_refreshes_a_hot_entry_before_it_expires(make_proxy, upstream):
    proxy = await make_proxy(routes=route(ttl="1h", refresh_ahead="1h"))
    await proxy.client.post(SELECT, json={"task": "popular"})
    # 3 s before expiry the chance of a refresh is 1 - 3/3600 per request: three requests
    # make missing it a one-in-a-billion event (and 3 s is ample slack for a slow machine).
    age_l1_entries(proxy.runtime, 3600 - 3)
    responses = [await proxy.client.post(SELECT, json={"task": "popular"}) for _ in range(3)]
    assert {r.headers["Cache-Status"] for r in responses} == {"sidecache; hit; detail=l1"}
    await proxy.runtime.refreshes.wait(timeout=5)
    assert upstream.calls[SELECT] >= 2
    after = await proxy.client.post(SELECT, json={"task": "popular"})
    assert echo_of(await after.read())["n"] >= 2


async def test_refresh_ahead_leaves_young_entries_alone(make_proxy, upstream):
    proxy = await make_proxy(routes=route(refresh_ahead="2s"))
    await proxy.client.post(SELECT, json={"task": "popular"})
    for _ in range(20):
        await proxy.client.post(SELECT, json={"task": "popular"})
    assert upstream.calls[SELECT] == 1
