"""The coalescing trial: ``clients`` identical cold requests at once, to an upstream that
takes ``delay_ms`` to answer. A cache that coalesces makes one upstream call and answers
every client about when the upstream answers; nginx's ``proxy_cache_lock`` also makes one
call, but its waiters poll the lock every 500 ms.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import aiohttp

from bench.load import nearest_rank
from bench.scenarios import upstream_calls

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Coalescing:
    """What one coalescing trial saw."""

    upstream_calls: int
    p50_ms: float
    p99_ms: float
    failed: int

    def to_json(self) -> dict:
        return {
            "upstream_calls": self.upstream_calls,
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "failed": self.failed,
        }


async def _trial(target: str, upstream: str, clients: int, delay_ms: int) -> Coalescing:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Open every client connection (and the target's upstream pool) first, so the trial
        # measures waiting for the upstream, not connection setup.
        async def warm() -> None:
            async with session.get(f"{target}/agents") as response:
                await response.read()

        await asyncio.gather(*(warm() for _ in range(clients)))
        upstream_calls(upstream, reset=True)  # a blocking call, but nothing is in flight

        body = json.dumps({"task": f"coalesce {uuid.uuid4()}", "top_k": 3}).encode()
        url = f"{target}/agents/select?delay_ms={delay_ms}"
        headers = {"Content-Type": "application/json"}

        async def one() -> float | None:
            began = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == 200
            return time.perf_counter() - began if ok else None

        latencies = await asyncio.gather(*(one() for _ in range(clients)))
    calls = upstream_calls(upstream)
    ordered = sorted(s * 1000 for s in latencies if s is not None)
    if not ordered:
        return Coalescing(calls, float("nan"), float("nan"), clients)
    return Coalescing(
        calls, nearest_rank(ordered, 50), nearest_rank(ordered, 99), clients - len(ordered)
    )


def coalescing_trial(
    target: str, upstream: str, *, clients: int = 100, delay_ms: int = 100
) -> Coalescing:
    """One trial against ``target`` (a sidecache or nginx in front of ``upstream``)."""
    return asyncio.run(_trial(target, upstream, clients, delay_ms))
