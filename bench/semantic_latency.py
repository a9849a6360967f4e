"""Latency of a semantic lookup (embed + nearest neighbour + guard) over 100,000 stored
entries, next to an exact-tier lookup measured in the same run.

    python -m bench.semantic_latency                 # embedded PostgreSQL, 100k entries
    python -m bench.semantic_latency --pg-dsn postgresql://... --redis-url redis://...

The rows are bulk-loaded with COPY, then the HNSW index is built once (faster than growing
it row by row). Lookups are sequential so each number is one request's latency. The exact
tier is an in-process LRU lookup of a SHA-256 key (what L1 does), plus a Redis GET when a
Redis URL is given or ``--redis`` starts an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
from cachetools import LRUCache

from core.config import EmbedderConfig, SemanticStoreConfig
from core.entry import CachedResponse
from core.metrics import Metrics
from core.semantic.embedders import WordLlamaEmbedder, build_embedder
from core.semantic.tier import SemanticTier, register_vector

TABLE = "sidecache_bench_latency"
TARGET_P50_MS = 3.0


def _choices(text: str, separator: str) -> tuple[str, ...]:
    return tuple(text.split(separator))


_VERBS = _choices(
    "configure reset export import rotate migrate enable disable upgrade schedule cancel "
    "restore audit review approve translate summarize deploy archive monitor",
    " ",
)
_THINGS = _choices(
    "api gateway, tls certificates, read replica, billing account, audit logs, sso provider, "
    "webhook endpoint, kubernetes cluster, payment service, expense report, vacation policy, "
    "search index, backup schedule, firewall rules, data warehouse, mobile app, admin console, "
    "rate limits, invoice template, onboarding checklist, release pipeline, dns records, "
    "object storage, message queue, feature flags, support tickets, user roles, sales quota",
    ", ",
)
_QUALIFIERS = _choices(
    "for the eu region, on staging, in production, for new employees, for enterprise "
    "customers, after the outage, before the audit, for the mobile team, in the dashboard, "
    "with terraform, using the cli, for contractors, on the shared account, for partners",
    ", ",
)
_FRAMES = (
    "how to {v} the {t} {q}",
    "{v} {t} {q}",
    "steps to {v} {t} {q}",
    "can you {v} the {t} {q}",
    "runbook: {v} {t} {q}",
    "what happens when we {v} the {t} {q}",
)


def _texts(count: int, rng: random.Random) -> Iterator[str]:
    """Distinct, query-like texts (a number keeps them distinct beyond the combinations)."""
    for i in range(count):
        frame = rng.choice(_FRAMES)
        text = frame.format(v=rng.choice(_VERBS), t=rng.choice(_THINGS), q=rng.choice(_QUALIFIERS))
        yield f"{text} #{i}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label:<34} p50 {_percentile(ms, 0.50):7.3f} ms   p99 {_percentile(ms, 0.99):7.3f} ms"
        f"   mean {statistics.fmean(ms):7.3f} ms   n={len(ms)}"
    )


async def _timed(operation: Callable[[], Awaitable[object]], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await operation()
        samples.append(time.perf_counter() - started)
    return samples


async def _bulk_load(
    dsn: str, tier: SemanticTier, embedder: WordLlamaEmbedder, scopes: list[tuple[str, int]]
) -> None:
    """TRUNCATE, drop the HNSW index, COPY every row, build the index, ANALYZE."""
    rng = random.Random(7)
    entry = CachedResponse(
        200, (("content-type", "application/json"),), b'{"agents": ["billing"]}', ttl=86400
    ).to_bytes()
    expires = datetime.now(UTC) + timedelta(days=1)
    conn = await asyncpg.connect(dsn)
    try:
        schema = await conn.fetchval(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
            "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        )
        await register_vector(conn, schema)
        await conn.execute(f"TRUNCATE {TABLE}")
        await conn.execute(f"DROP INDEX IF EXISTS {TABLE}_hnsw_{embedder.dim}")
        started = time.perf_counter()
        total = 0
        for scope, count in scopes:
            key = tier.scope_key(scope)
            texts = list(_texts(count, rng))
            for start in range(0, count, 10_000):
                chunk = texts[start : start + 10_000]
                vectors = embedder.embed_many(chunk)
                records = [
                    (
                        key,
                        hashlib.blake2b(text.encode(), digest_size=16).digest(),
                        embedder.dim,
                        "search",
                        ["bench"],
                        text,
                        vector,
                        entry,
                        expires,
                    )
                    for text, vector in zip(chunk, vectors, strict=True)
                ]
                await conn.copy_records_to_table(
                    TABLE,
                    records=records,
                    columns=[
                        "scope",
                        "query_hash",
                        "dim",
                        "route",
                        "tags",
                        "query",
                        "embedding",
                        "entry",
                        "expires_at",
                    ],
                )
                total += len(chunk)
        print(f"loaded {total} rows with COPY in {time.perf_counter() - started:.1f}s")
        started = time.perf_counter()
        await tier.ensure_schema()
        print(f"built the HNSW index in {time.perf_counter() - started:.1f}s")
        await conn.execute(f"ANALYZE {TABLE}")
    finally:
        await conn.close()


async def run(args: argparse.Namespace, dsn: str, redis_url: str | None) -> int:
    embedder = WordLlamaEmbedder()
    metrics = Metrics()
    config = SemanticStoreConfig(
        dsn=dsn, table=TABLE, pool_min=1, pool_max=4, command_timeout=5.0, candidates=3
    )
    # No memo: every lookup pays for its embedding, as a first-seen query would.
    tier = SemanticTier(config, build_embedder(EmbedderConfig(memo_size=0)), metrics)
    await tier.start()
    try:
        small = 20
        await _bulk_load(
            dsn, tier, embedder, [("bench-big", args.entries - small), ("bench-small", small)]
        )
        rng = random.Random(11)
        queries = [t.rsplit(" #", 1)[0] for t in _texts(args.lookups, rng)]
        cursor = iter(range(10**9))

        async def semantic_big() -> object:
            return await tier.lookup("bench-big", queries[next(cursor) % len(queries)], 0.55)

        async def semantic_small() -> object:
            return await tier.lookup("bench-small", queries[next(cursor) % len(queries)], 0.0)

        await _timed(semantic_big, 200)  # warm caches and the pool
        big = await _timed(semantic_big, args.lookups)
        small_samples = await _timed(semantic_small, min(args.lookups, 500))
        found = await tier.lookup("bench-small", queries[0], 0.0, guard=False)
        print("small scope answers:", "yes" if found is not None else "NO (bug)")

        exact = _exact_lookups(args.lookups)
        print()
        print(f"{args.entries} entries, {args.lookups} sequential lookups")
        print(_row("semantic, 100k-row scope", big))
        print(_row(f"semantic, {small}-row scope", small_samples))
        print(_row("exact in-process LRU (sha256 key)", exact))
        if redis_url:
            print(_row("exact Redis GET", await _redis_lookups(redis_url, args.lookups)))
        p50 = _percentile(big, 0.5) * 1000
        verdict = "ok" if p50 <= TARGET_P50_MS else "OVER TARGET"
        print(f"semantic_p50_ms={p50:.3f} target={TARGET_P50_MS} {verdict}")
        return 0 if p50 <= TARGET_P50_MS and found is not None else 1
    finally:
        if not args.keep:
            with contextlib.suppress(Exception):
                conn = await asyncpg.connect(dsn)
                await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
                await conn.close()
        await tier.close()


def _exact_lookups(times: int) -> list[float]:
    cache: LRUCache[str, CachedResponse] = LRUCache(maxsize=200_000)
    entry = CachedResponse(200, (), b'{"agents": ["billing"]}', ttl=300)
    bodies = [json.dumps({"query": f"query number {i}", "top_k": 5}) for i in range(100_000)]
    for body in bodies:
        cache[hashlib.sha256(body.encode()).hexdigest()] = entry
    samples = []
    for i in range(times):
        started = time.perf_counter()
        cache.get(hashlib.sha256(bodies[(i * 7919) % len(bodies)].encode()).hexdigest())
        samples.append(time.perf_counter() - started)
    return samples


async def _redis_lookups(url: str, times: int) -> list[float]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        blob = CachedResponse(200, (), b'{"agents": ["billing"]}', ttl=300).to_bytes()
        await client.set("sidecache:bench:latency", blob, ex=300)
        return await _timed(lambda: client.get("sidecache:bench:latency"), times)
    finally:
        await client.delete("sidecache:bench:latency")
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-dsn", help="existing PostgreSQL with pgvector (default: embedded)")
    parser.add_argument("--redis-url", help="also time a Redis GET against this server")
    parser.add_argument("--redis", action="store_true", help="start an embedded Redis to time")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help=f"keep the {TABLE} table")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        dsn = args.pg_dsn
        if dsn is None:
            from examples.embedded import PostgresServer

            settings = {"shared_buffers": "512MB", "maintenance_work_mem": "1GB"}
            dsn = stack.enter_context(PostgresServer(settings=settings)).dsn
        redis_url = args.redis_url
        if redis_url is None and args.redis:
            from examples.embedded import RedisServer

            redis_url = stack.enter_context(RedisServer()).url
        return asyncio.run(run(args, dsn, redis_url))


if __name__ == "__main__":
    sys.exit(main())
