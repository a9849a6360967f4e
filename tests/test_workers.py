"""``server.workers: 2``: two processes share the proxy port and one metrics view."""

import asyncio
import signal
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until


async def _request_count(admin_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{admin_url}/metrics") as r:
        text = await r.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "sidecache_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    )


def _listens(worker: psutil.Process, port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for c in worker.net_connections(kind="tcp")
    )


def _requests_served_by(worker: psutil.Process) -> float:
    """Requests one worker counted, read from its own file in the shared metrics dir."""
    metrics_dir = worker.environ()["PROMETHEUS_MULTIPROC_DIR"]
    own = Path(metrics_dir) / f"histogram_{worker.pid}.db"
    return sum(
        sample.value
        for family in MultiProcessCollector.merge([str(own)])
        if family.name == "sidecache_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    )


async def test_two_workers_share_the_port_and_report_one_metrics_view(
    run_sidecache, upstream, redis_url
):
    proxy = await run_sidecache(
        {
            "server": {"workers": 2},
            "upstream": {"url": upstream.url},
            "cache": {"l2": {"url": redis_url, "key_prefix": "workers-test:"}},
            "routes": [{"name": "select", "path": "/agents/select"}],
        }
    )
    workers = psutil.Process(proxy.process.pid).children()
    assert len(workers) == 2
    port = int(proxy.url.rsplit(":", 1)[1])

    async def both_listening() -> bool:
        return all(_listens(worker, port) for worker in workers)

    await wait_until(both_listening, timeout=20)
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(i: int) -> int:
            async with session.post(f"{proxy.url}/agents/select", json={"task": i % 5}) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(ask(i) for i in range(200)))
    assert statuses == [200] * 200

    async def all_counted() -> bool:
        return await _request_count(proxy.admin_url) == 200

    await wait_until(all_counted, timeout=5)
    assert all(_requests_served_by(worker) > 0 for worker in workers)  # the port is shared

    proxy.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proxy.process.wait(), timeout=20) == 0
