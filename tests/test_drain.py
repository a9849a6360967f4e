"""Graceful drain of a real ``sidecache run`` process on SIGTERM."""

import asyncio
import signal

import aiohttp

from tests.conftest import wait_until


async def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    run_sidecache, upstream
):
    proxy = await run_sidecache(
        {
            "server": {"drain_delay": "300ms", "drain_timeout": "20s"},
            "upstream": {"url": upstream.url},
            "routes": [{"name": "select", "path": "/agents/select"}],
        }
    )
    upstream.delay = 2
    async with aiohttp.ClientSession() as session:

        async def slow(i: int) -> int:
            async with session.post(f"{proxy.url}/agents/select", json={"task": i}) as response:
                await response.read()
                return response.status

        in_flight = [asyncio.ensure_future(slow(i)) for i in range(20)]
        await wait_until(lambda: asyncio.sleep(0, upstream.in_flight == 20))

        proxy.process.send_signal(signal.SIGTERM)
        await wait_until(lambda: _not_ready(f"{proxy.admin_url}/readyz"), timeout=2)
        await wait_until(lambda: _refused(proxy.url), timeout=5)
        statuses = await asyncio.gather(*in_flight)

    assert statuses == [200] * 20
    assert await asyncio.wait_for(proxy.process.wait(), timeout=20) == 0


async def _not_ready(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status == 503


async def _refused(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{base}/x"):
            return False
    except aiohttp.ClientConnectorError:
        return True
