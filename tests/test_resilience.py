"""Load shedding and client disconnects."""

import asyncio
import json

import aiohttp

SELECT = "/agents/select"


async def _wait_until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


async def test_a_starved_upstream_sheds_misses_with_503_while_hits_still_answer(
    make_proxy, upstream
):
    proxy = await make_proxy(upstream={"max_concurrency": 2, "queue_timeout": "100ms"})
    await proxy.client.post(SELECT, json={"task": "warm"})
    upstream.delay = 2

    misses = [
        asyncio.ensure_future(proxy.client.post(SELECT, json={"task": f"cold {i}"}))
        for i in range(6)
    ]
    await _wait_until(lambda: upstream.in_flight == 2)
    hit = await proxy.client.post(SELECT, json={"task": "warm"})
    assert hit.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert upstream.in_flight == 2  # the hit was answered while both slots were still busy

    shed = [r for r in await asyncio.gather(*misses) if r.status == 503]
    assert len(shed) == 4
    assert shed[0].headers["Retry-After"] == "1"
    assert json.loads(await shed[0].read())["error"] == "overloaded"
    assert upstream.calls[SELECT] == 3
    assert proxy.runtime.metrics.shed.labels("select")._value.get() == 4


async def test_a_route_bound_sheds_only_that_route(make_proxy, upstream):
    routes = [
        {"name": "select", "path": SELECT, "max_concurrency": 1},
        {"name": "search", "path": "/search"},
    ]
    proxy = await make_proxy(routes=routes, upstream={"queue_timeout": "100ms"})
    upstream.delay = 1
    first = asyncio.ensure_future(proxy.client.post(SELECT, json={"task": "a"}))
    await _wait_until(lambda: upstream.in_flight == 1)
    second = await proxy.client.post(SELECT, json={"task": "b"})
    other_route = await proxy.client.post("/search", json={"query": "q"})
    assert second.status == 503
    assert other_route.status == 200
    assert (await first).status == 200


async def test_a_client_that_goes_away_cancels_its_upstream_request(make_proxy, upstream):
    proxy = await make_proxy()
    upstream.delay = 5
    request = asyncio.ensure_future(proxy.client.post(SELECT, json={"task": "abandoned"}))
    await _wait_until(lambda: upstream.in_flight == 1)
    request.cancel()
    await _wait_until(lambda: upstream.cancelled == 1)
    assert upstream.in_flight == 0


async def test_a_passthrough_client_that_goes_away_cancels_its_upstream_request(
    make_proxy, upstream
):
    proxy = await make_proxy()
    upstream.delay = 5
    request = asyncio.ensure_future(proxy.client.get("/not/cached"))
    await _wait_until(lambda: upstream.in_flight == 1)
    request.cancel()
    await _wait_until(lambda: upstream.cancelled == 1)


async def test_the_upstream_request_goes_on_while_another_waiter_needs_it(make_proxy, upstream):
    proxy = await make_proxy()
    upstream.delay = 0.5
    url = proxy.client.make_url(SELECT)
    async with aiohttp.ClientSession() as leaving, aiohttp.ClientSession() as staying:
        first = asyncio.ensure_future(leaving.post(url, json={"task": "shared"}))
        await _wait_until(lambda: upstream.in_flight == 1)
        second = asyncio.ensure_future(staying.post(url, json={"task": "shared"}))
        await asyncio.sleep(0.05)  # let the second request join the flight
        first.cancel()
        response = await second
        assert response.status == 200
    assert upstream.cancelled == 0
    assert upstream.calls[SELECT] == 1
