"""The semantic tier against real PostgreSQL + pgvector and the real wordllama embedder."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import numpy as np
import pytest
from aiohttp import web

from core.config import BreakerConfig, EmbedderConfig, SemanticStoreConfig
from core.entry import CachedResponse
from core.errors import ConfigError
from core.metrics import Metrics
from core.semantic.embedders import WordLlamaEmbedder, build_embedder
from core.semantic.tier import SemanticTier, check_pgvector_version
from examples.embedded import PostgresServer

THRESHOLD = 0.55
STORED = "how to configure rate limiting on the API gateway"
PARAPHRASE = "API gateway rate limit configuration"


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


class Clock:
    """Wall-clock time that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


TierFactory = Callable[..., Awaitable[SemanticTier]]


@pytest.fixture
async def make_tier(pg_dsn, wordllama) -> AsyncIterator[TierFactory]:
    """Builds started tiers on a table of this test's own; closes them and drops the table."""
    tiers: list[SemanticTier] = []
    table = f"t_{uuid.uuid4().hex[:12]}"
    dsns = {pg_dsn}

    async def make(embedder=wordllama, clock=time.time, namespace="", **overrides) -> SemanticTier:
        settings = {
            "dsn": pg_dsn,
            "table": table,
            "command_timeout": 1.0,
            "connect_timeout": 1.0,
            "breaker": BreakerConfig(failures=1, open_for=0.2),
            "cleanup_interval": 3600.0,
            **overrides,
        }
        dsns.add(settings["dsn"])
        config = SemanticStoreConfig(**settings)
        tier = SemanticTier(config, embedder, Metrics(), clock=clock, namespace=namespace)
        tiers.append(tier)
        await tier.start()
        return tier

    yield make
    for tier in tiers:
        await tier.close()
    for dsn in dsns:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError):
            continue  # the test stopped that server or dropped that database
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


def answer(body: bytes = b'{"agent": "billing"}', ttl: float = 300, **fields) -> CachedResponse:
    return CachedResponse(200, (("content-type", "application/json"),), body, ttl=ttl, **fields)


def decisions(tier: SemanticTier, result: str, reason: str) -> float:
    return tier._metrics.semantic_decisions.labels(result, reason)._value.get()


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def test_a_paraphrase_is_answered_with_the_stored_response(make_tier):
    tier = await make_tier()
    await tier.store("scope", "search", STORED, answer(b'{"doc": 7}', tags=("docs",)))

    hit = await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True)

    assert hit is not None
    assert (hit.entry.body, hit.entry.tags, hit.matched_text) == (b'{"doc": 7}', ("docs",), STORED)
    assert THRESHOLD < hit.similarity <= 1.0
    assert decisions(tier, "hit", "none") == 1


@pytest.mark.parametrize(
    ("reason", "stored", "near_miss"),
    [
        ("number", STORED, "how to configure rate limiting on the API gateway v2"),
        ("date", STORED, "how to configure rate limiting on the API gateway in 2025"),
        ("negation", STORED, "how to configure rate limiting without the API gateway"),
        ("entity", STORED, "how to configure rate limiting on the Kong API gateway"),
        ("scope", STORED, "how to configure rate limiting on the staging API gateway"),
        ("term", STORED, "how to configure rate limiting on the API proxy"),
        ("opposite_action", "how to enable debug logging", "how to disable debug logging"),
        ("direction", "translate the guide into Japanese", "translate the guide from Japanese"),
    ],
)
async def test_a_near_miss_is_rejected_and_counted(make_tier, reason, stored, near_miss):
    tier = await make_tier()
    await tier.store("scope", "search", stored, answer())

    assert await tier.lookup("scope", near_miss, THRESHOLD, guard=True) is None
    assert decisions(tier, "rejected", reason) == 1


async def test_without_the_guard_the_nearest_candidate_above_threshold_hits(make_tier):
    tier = await make_tier()
    await tier.store("scope", "search", "release notes for SDK version 4.2", answer())

    assert await tier.lookup("scope", "release notes for SDK version 4.3", 0.9, guard=False)
    assert not await tier.lookup("scope", "release notes for SDK version 4.3", 0.9, guard=True)


async def test_a_candidate_below_the_threshold_is_a_miss(make_tier):
    tier = await make_tier()
    await tier.store("scope", "search", STORED, answer())

    assert await tier.lookup("scope", "parental leave policy", THRESHOLD, guard=True) is None
    assert decisions(tier, "miss", "below_threshold") == 1


async def test_the_guard_may_accept_the_second_nearest_candidate(make_tier):
    tier = await make_tier()
    await tier.store("scope", "search", "release notes for SDK 4.3", answer(b"4.3"))
    await tier.store("scope", "search", "SDK version 4.2 release notes", answer(b"4.2"))

    hit = await tier.lookup("scope", "release notes for SDK 4.2", THRESHOLD, guard=True)

    assert hit is not None and hit.entry.body == b"4.2"


async def test_scopes_are_isolated(make_tier):
    tier = await make_tier()
    await tier.store("route=search|tenant=a|top_k=5", "search", STORED, answer())

    for other in ("route=search|tenant=b|top_k=5", "route=search|tenant=a|top_k=10"):
        assert await tier.lookup(other, STORED, THRESHOLD, guard=True) is None
    assert await tier.lookup("route=search|tenant=a|top_k=5", STORED, THRESHOLD, guard=True)


async def test_vectors_of_another_embedder_are_never_compared(make_tier, wordllama):
    class RenamedModel:
        """The same vectors under another model id: a different embedder to the tier."""

        id, dim = "wordllama:renamed", wordllama.dim

        async def embed(self, text: str) -> np.ndarray:
            return await wordllama.embed(text)

        async def close(self) -> None:
            return None

    first = await make_tier()
    second = await make_tier(embedder=RenamedModel())
    await first.store("scope", "search", STORED, answer())

    assert await second.lookup("scope", STORED, THRESHOLD, guard=True) is None
    assert await first.lookup("scope", STORED, THRESHOLD, guard=True) is not None


async def test_two_services_sharing_the_table_never_get_each_others_answers(make_tier):
    service_a = await make_tier(namespace="sidecache:a:")
    service_b = await make_tier(namespace="sidecache:b:")
    await service_a.store("scope", "search", STORED, answer(b"from a"))

    assert await service_b.lookup("scope", STORED, THRESHOLD, guard=True) is None
    await service_b.store("scope", "search", STORED, answer(b"from b"))
    hit_a = await service_a.lookup("scope", PARAPHRASE, THRESHOLD, guard=True)
    hit_b = await service_b.lookup("scope", PARAPHRASE, THRESHOLD, guard=True)
    assert (hit_a.entry.body, hit_b.entry.body) == (b"from a", b"from b")


@pytest.mark.parametrize(
    "purge",
    [{"route": "search"}, {"tag": "refunds"}, {"everything": True}],
    ids=["route", "tag", "everything"],
)
async def test_a_purge_deletes_only_its_own_services_rows(make_tier, purge):
    service_a = await make_tier(namespace="sidecache:a:")
    service_b = await make_tier(namespace="sidecache:b:")
    for tier in (service_a, service_b):
        await tier.store("scope", "search", STORED, answer(tags=("refunds",)))

    assert await service_a.purge(**purge) == 1

    assert await service_a.lookup("scope", STORED, THRESHOLD, guard=True) is None
    assert await service_b.lookup("scope", STORED, THRESHOLD, guard=True) is not None


async def test_a_table_from_before_namespaces_gets_the_column_and_keeps_working(make_tier, pg_dsn):
    tier = await make_tier(namespace="sidecache:a:")
    await tier.store("scope", "search", "a row written before namespaces", answer())
    await tier.close()
    conn = await asyncpg.connect(pg_dsn)  # back to the old layout, with one row in it
    await conn.execute(f"ALTER TABLE {tier._config.table} DROP COLUMN namespace")
    await conn.close()

    upgraded = await make_tier(namespace="sidecache:a:")
    await upgraded.store("scope", "search", STORED, answer(b"new"))
    hit = await upgraded.lookup("scope", PARAPHRASE, THRESHOLD, guard=True)

    assert hit is not None and hit.entry.body == b"new"
    assert await upgraded.purge(everything=True) == 1  # its own row: the old one expires


async def test_a_small_scope_in_a_big_table_still_finds_its_row(make_tier, pg_dsn, wordllama):
    tier = await make_tier(hnsw_ef_search=10)
    crowd = [f"runbook {i} for restoring service number {i} from backup" for i in range(400)]
    for text in crowd:
        await tier.store("big", "search", text, answer())
    await tier.store("small", "search", STORED, answer(b"small"))
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f"ANALYZE {tier._config.table}")
    await conn.close()

    hit = await tier.lookup("small", PARAPHRASE, THRESHOLD, guard=True)

    assert hit is not None and hit.entry.body == b"small"


async def test_storing_the_same_text_again_replaces_the_answer(make_tier):
    tier = await make_tier()
    await tier.store("scope", "search", STORED, answer(b"old"))
    await tier.store("scope", "search", STORED, answer(b"new"))

    hit = await tier.lookup("scope", STORED, THRESHOLD, guard=True)

    assert hit is not None and hit.entry.body == b"new"
    assert await tier.purge(everything=True) == 1


async def test_an_expired_row_is_never_served(make_tier):
    clock = Clock()
    tier = await make_tier(clock=clock)
    stale_window = answer(ttl=60, stale_while_revalidate=30)
    await tier.store("scope", "search", STORED, stale_window.with_times(clock(), 60))

    clock.offset = 80  # stale but usable: still served, the caller decides how
    assert await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True) is not None
    clock.offset = 91
    assert await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True) is None


async def test_expired_rows_are_deleted_in_batches(make_tier):
    clock = Clock()
    tier = await make_tier(clock=clock, cleanup_batch=2)
    for i in range(5):
        await tier.store("scope", "search", f"expired question {i}", answer(ttl=1))
    await tier.store("scope", "search", STORED, answer(ttl=3600))
    clock.offset = 10

    assert await tier.delete_expired() == 5
    assert await tier.purge(everything=True) == 1


async def test_the_background_cleanup_deletes_expired_rows(make_tier):
    tier = await make_tier(cleanup_interval=0.05)
    await tier.store("scope", "search", STORED, answer(ttl=0.1))

    async def gone() -> bool:
        return await tier.purge(everything=True) == 0

    await wait_until(gone)


async def test_purge_by_route_tag_and_everything(make_tier):
    tier = await make_tier()
    await tier.store("s1", "search", "refund policy for annual plans", answer(tags=("refunds",)))
    await tier.store("s1", "search", "travel policy for flights", answer(tags=("travel",)))
    await tier.store("s2", "select", "which agent handles refunds", answer(tags=("refunds",)))
    await tier.store("s2", "select", "which agent books flights", answer())

    assert await tier.purge(tag="refunds") == 2
    assert await tier.lookup("s1", "refund policy for annual plans", THRESHOLD, True) is None
    assert await tier.lookup("s1", "travel policy for flights", THRESHOLD, True) is not None
    assert await tier.purge(route="select") == 1
    assert await tier.lookup("s2", "which agent books flights", THRESHOLD, True) is None
    assert await tier.purge(everything=True) == 1


async def test_postgres_stopping_mid_test_turns_lookups_into_misses(make_tier):
    with PostgresServer() as server:
        tier = await make_tier(dsn=server.dsn)
        await tier.store("scope", "search", STORED, answer())
        assert await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True) is not None

        server.stop()
        results = [await tier.lookup("scope", PARAPHRASE, THRESHOLD, True) for _ in range(5)]
        await tier.store("scope", "search", "another question", answer())  # dropped, no raise

        assert results == [None] * 5
        assert not tier.available
        assert tier._metrics.tier_available.labels("semantic")._value.get() == 0

        server.start()

        async def recovered() -> bool:
            return await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True) is not None

        await wait_until(recovered)
        assert tier.available


async def test_a_tier_started_while_postgres_is_down_connects_when_it_comes_up(make_tier):
    server = PostgresServer()
    try:
        server.start()
        server.stop()
        tier = await make_tier(dsn=server.dsn)
        assert not tier.available
        assert await tier.lookup("scope", STORED, THRESHOLD, guard=True) is None

        server.start()

        async def connected() -> bool:
            return tier.available

        await wait_until(connected)
        await tier.store("scope", "search", STORED, answer())
        assert await tier.lookup("scope", PARAPHRASE, THRESHOLD, guard=True) is not None
    finally:
        server.close()


async def test_an_embedder_timeout_is_a_miss(make_tier, aiohttp_server):
    slow = {"delay": 0.0}

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(slow["delay"])
        seed = sum(body["input"].encode())
        vector = np.random.default_rng(seed).normal(size=8).tolist()
        return web.json_response({"data": [{"embedding": vector}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    server = await aiohttp_server(app, host="127.0.0.1")
    config = EmbedderConfig(
        kind="openai", url=str(server.make_url("/")), model="fake", timeout=0.1, dim=8
    )
    embedder = build_embedder(config)
    tier = await make_tier(embedder=embedder)
    await tier.store("scope", "search", STORED, answer())
    assert await tier.lookup("scope", STORED, 0.99, guard=True) is not None

    slow["delay"] = 1.0
    started = time.monotonic()
    assert await tier.lookup("scope", "a text not memoised yet", 0.0, guard=False) is None
    assert time.monotonic() - started < 0.5
    assert decisions(tier, "miss", "embedder") == 1
    await embedder.close()


async def test_the_schema_is_created_on_an_empty_database_and_reused_on_restart(make_tier, pg_dsn):
    database = f"db_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f"CREATE DATABASE {database}")
    dsn = pg_dsn.rsplit("/", 1)[0] + "/" + database
    try:
        first = await make_tier(dsn=dsn)
        await first.store("scope", "search", STORED, answer(b"kept"))
        await first.close()

        second = await make_tier(dsn=dsn)
        hit = await second.lookup("scope", PARAPHRASE, THRESHOLD, guard=True)
        await second.close()

        conn = await asyncpg.connect(dsn)
        extension = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1",
            first._config.table,
        )
        await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()

    assert hit is not None and hit.entry.body == b"kept"
    assert check_pgvector_version(extension) is None
    hnsw = [row["indexdef"] for row in indexes if "hnsw" in row["indexdef"]]
    assert len(hnsw) == 1 and "vector_cosine_ops" in hnsw[0] and "m='16'" in hnsw[0]


@pytest.mark.parametrize("version", ["0.5.1", "0.8.0", "0.8.3"])
def test_pgvector_older_than_0_8_4_is_refused_with_a_clear_message(version):
    with pytest.raises(ConfigError, match=rf"pgvector {version} is installed.*0\.8\.4"):
        check_pgvector_version(version)


@pytest.mark.parametrize("version", ["0.8.4", "0.8.6", "0.9.0", "1.0"])
def test_pgvector_0_8_4_and_newer_is_accepted(version):
    assert check_pgvector_version(version) is None


def test_a_table_name_that_is_not_an_identifier_is_a_config_error(wordllama):
    config = SemanticStoreConfig(dsn="postgresql://x", table="t; drop table users")
    with pytest.raises(ConfigError, match=r"cache\.semantic\.table"):
        SemanticTier(config, wordllama, Metrics())
