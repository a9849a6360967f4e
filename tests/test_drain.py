"""Graceful drain of a real ``sidecache run`` process on SIGTERM."""

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import yaml

from examples.embedded import free_port

SIDECACHE = str(Path(sys.executable).with_name("sidecache"))


async def _poll(check, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(upstream, tmp_path):
    port, admin_port = free_port(), free_port()
    config = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "admin_host": "127.0.0.1",
            "admin_port": admin_port,
            "drain_delay": "300ms",
            "drain_timeout": "20s",
        },
        "upstream": {"url": upstream.url},
        "routes": [{"name": "select", "path": "/agents/select"}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        SIDECACHE, "run", "--config", str(tmp_path / "config.yaml")
    )
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        await _poll(lambda: _answers(f"{admin}/healthz"))
        upstream.delay = 2
        async with aiohttp.ClientSession() as session:

            async def slow(i: int) -> int:
                async with session.post(f"{base}/agents/select", json={"task": i}) as response:
                    await response.read()
                    return response.status

            in_flight = [asyncio.ensure_future(slow(i)) for i in range(20)]
            await _poll(lambda: asyncio.sleep(0, upstream.in_flight == 20))

            process.send_signal(signal.SIGTERM)
            await _poll(lambda: _not_ready(f"{admin}/readyz"), timeout=2)
            await _poll(lambda: _refused(base), timeout=5)
            statuses = await asyncio.gather(*in_flight)

        assert statuses == [200] * 20
        assert await asyncio.wait_for(process.wait(), timeout=20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _not_ready(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status == 503


async def _refused(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{base}/x"):
            return False
    except aiohttp.ClientConnectorError:
        return True
