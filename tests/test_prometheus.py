"""A real Prometheus (Debian's ``prometheus`` package) scrapes a running sidecache over
loopback; ``promtool`` lints the exposition; the Grafana dashboard's queries run on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from examples.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 40.0


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install prometheus)")
        pytest.skip(f"{name} not installed (CI installs Debian's prometheus package)")
    return path


class Prometheus:
    """A Prometheus server process with its own storage and port, and its HTTP API."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def query(self, expr: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/api/v1/query", params={"query": expr}) as r:
            return await r.json()

    async def series(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of ``expr``, polled until it is not empty or the deadline."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                answer = await self.query(expr)
                if answer.get("status") == "success" and answer["data"]["result"]:
                    return answer["data"]["result"]
            await asyncio.sleep(0.25)
        raise AssertionError(f"Prometheus has no data for {expr} after {DEADLINE}s")


@pytest.fixture
async def prometheus_for(tmp_path: Path):
    """Start a Prometheus scraping the given ``host:port`` every second."""
    executable = binary("prometheus")
    processes: list[subprocess.Popen[bytes]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(target: str) -> Prometheus:
        scrape = {"job_name": "sidecache", "static_configs": [{"targets": [target]}]}
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [scrape],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    executable,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        sessions.append(session)
        return Prometheus(f"http://127.0.0.1:{port}", session)

    yield start
    for session in sessions:
        await session.close()
    for process in processes:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


@pytest.fixture
async def sidecache_with_traffic(make_proxy) -> AsyncIterator[Any]:
    proxy = await make_proxy()
    for _ in range(3):  # a miss, then hits
        response = await proxy.client.post("/agents/select", json={"task": "book a flight"})
        assert response.status == 200
    yield proxy


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_prometheus_ingests_the_request_histogram_and_cache_counters(
    sidecache_with_traffic, prometheus_for
):
    proxy = sidecache_with_traffic
    prometheus = await prometheus_for(f"127.0.0.1:{proxy.admin.server.port}")

    up = await prometheus.series('up{job="sidecache"} == 1')
    buckets = await prometheus.series(
        'sidecache_request_duration_seconds_bucket{route="select", cache="hit", le="+Inf"}'
    )
    hits = await prometheus.series(
        'sidecache_cache_operations_total{tier="l1", op="get", result="hit"}'
    )

    assert len(up) == 1
    assert float(buckets[0]["value"][1]) == 2
    assert float(hits[0]["value"][1]) >= 2


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_grafana_queries_run_on_prometheus(sidecache_with_traffic, prometheus_for):
    proxy = sidecache_with_traffic
    prometheus = await prometheus_for(f"127.0.0.1:{proxy.admin.server.port}")
    await prometheus.series("sidecache_health_score")
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sidecache.json").read_text())
    grafana_variables = {
        "$__rate_interval": "1m",
        "$__range": "5m",
        "$job": ".+",
        "$instance": ".+",
    }

    failed = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in grafana_variables.items():
                expr = expr.replace(variable, value)
            answer = await prometheus.query(expr)
            if answer.get("status") != "success":
                failed[panel["title"]] = answer.get("error")

    assert failed == {}


async def test_promtool_finds_nothing_to_report_in_metrics(sidecache_with_traffic):
    promtool = binary("promtool")
    proxy = sidecache_with_traffic
    body = await (await proxy.admin.get("/metrics")).read()

    result = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=30,
    )

    assert (result.returncode, result.stdout + result.stderr) == (0, b"")
