"""Concurrent identical misses make one upstream call; everyone gets its answer or error."""

import asyncio

from tests.upstream import Canned


async def test_concurrent_identical_misses_make_one_upstream_call(make_proxy, upstream):
    upstream.delay = 0.2
    proxy = await make_proxy()
    responses = await asyncio.gather(
        *(proxy.client.post("/agents/select", json={"task": "cold"}) for _ in range(100))
    )
    bodies = {await r.read() for r in responses}
    assert upstream.calls["/agents/select"] == 1
    assert {r.status for r in responses} == {200}
    assert len(bodies) == 1
    assert sum("collapsed" in r.headers["Cache-Status"] for r in responses) == 99
    assert proxy.runtime.metrics.coalesced.labels("select")._value.get() == 99


async def test_a_failing_upstream_fails_every_waiter_without_hanging(make_proxy, upstream):
    upstream.delay = 0.2
    proxy = await make_proxy()
    await upstream.stop()  # nothing listens: every waiter must get the 502, none hang
    responses = await asyncio.wait_for(
        asyncio.gather(
            *(proxy.client.post("/agents/select", json={"task": "down"}) for _ in range(20))
        ),
        timeout=10,
    )
    assert {r.status for r in responses} == {502}


async def test_a_timing_out_upstream_fails_every_waiter_with_504(make_proxy, upstream):
    upstream.delay = 5
    proxy = await make_proxy(upstream={"timeout": "200ms"})
    responses = await asyncio.wait_for(
        asyncio.gather(
            *(proxy.client.post("/agents/select", json={"task": "slow"}) for _ in range(20))
        ),
        timeout=10,
    )
    assert {r.status for r in responses} == {504}
    assert upstream.calls["/agents/select"] == 1


async def test_a_per_client_answer_is_not_handed_to_waiters(make_proxy, upstream):
    upstream.delay = 0.2
    upstream.canned["/agents/select"] = Canned(200, {"Set-Cookie": "session=abc"}, b"{}")
    proxy = await make_proxy()
    responses = await asyncio.gather(
        *(proxy.client.post("/agents/select", json={"task": "cookie"}) for _ in range(5))
    )
    assert {r.status for r in responses} == {200}
    assert upstream.calls["/agents/select"] == 5


async def test_different_requests_do_not_wait_for_each_other(make_proxy, upstream):
    upstream.delay = 0.2
    proxy = await make_proxy()
    responses = await asyncio.gather(
        *(proxy.client.post("/agents/select", json={"task": f"t{i}"}) for i in range(10))
    )
    assert {r.status for r in responses} == {200}
    assert upstream.calls["/agents/select"] == 10
    assert upstream.max_in_flight == 10
