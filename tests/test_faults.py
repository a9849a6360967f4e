"""Faults: a sick Redis never fails a request; a sick upstream gets a clear JSON error."""

import asyncio
import json
import os
import signal

from tests.upstream import echo_of


async def _wait_until(predicate, timeout: float = 10.0, step: float = 0.05):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(step)


async def test_upstream_unreachable_is_a_502_json_error(make_proxy, upstream):
    proxy = await make_proxy()
    await upstream.stop()
    response = await proxy.client.post("/agents/select", json={"task": "x"})
    body = json.loads(await response.read())
    assert response.status == 502
    assert body["error"] == "upstream_unreachable"
    assert body["detail"]
    assert response.headers["Cache-Status"] == ("sidecache; fwd=miss; detail=upstream_unreachable")
    passthrough = await proxy.client.get("/other")
    assert passthrough.status == 502


async def test_upstream_timeout_is_a_504_json_error(make_proxy, upstream):
    upstream.delay = 3
    proxy = await make_proxy(upstream={"timeout": "200ms"})
    response = await proxy.client.get("/slow")
    body = json.loads(await response.read())
    assert response.status == 504
    assert body["error"] == "upstream_timeout"
    assert response.headers["Cache-Status"] == "sidecache; fwd=bypass; detail=upstream_timeout"


async def test_redis_killed_and_restarted_fails_no_request_and_l2_is_used_again(
    make_proxy, upstream, redis_server
):
    proxy = await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": redis_server.url}})
    statuses = []

    async def ask(task: str) -> str:
        response = await proxy.client.post("/agents/select", json={"task": task})
        statuses.append(response.status)
        return response.headers["Cache-Status"]

    await ask("warm")
    await proxy.runtime.cache.flush()
    assert await ask("warm") == "sidecache; hit; detail=l2"

    redis_server.kill()
    for i in range(30):
        await ask(f"during outage {i % 3}")
    assert not proxy.runtime.l2.available

    redis_server.start()

    async def l2_hits_again() -> bool:
        await ask("after restart")
        await proxy.runtime.cache.flush()
        return await ask("after restart") == "sidecache; hit; detail=l2"

    await _wait_until(l2_hits_again)
    assert set(statuses) == {200}
    assert proxy.runtime.l2.available


async def test_a_slow_redis_is_skipped_not_waited_for(make_proxy, upstream, redis_server):
    proxy = await make_proxy(
        cache={"l1": {"enabled": False}, "l2": {"url": redis_server.url, "timeout": "100ms"}}
    )
    await proxy.client.post("/agents/select", json={"task": "x"})
    await proxy.runtime.cache.flush()
    os.kill(redis_server.pid, signal.SIGSTOP)  # connections stay open, nothing answers
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        responses = [
            await proxy.client.post("/agents/select", json={"task": "x"}) for _ in range(10)
        ]
        elapsed = loop.time() - started
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    assert {r.status for r in responses} == {200}
    # three timeouts open the breaker; after that Redis is not waited for at all
    assert elapsed < 2.0
    assert echo_of(await responses[-1].read())["path"] == "/agents/select"
