"""The semantic tier: answer a query from the nearest previously answered one.

Rows live in PostgreSQL + pgvector: the scope (a hash of everything that must be equal —
route, tenant, other body fields, vary headers — plus the embedder's id and dimension), the
query text, its embedding, the full stored response and its tags, and an expiry time. A
lookup is an exact-scope, nearest-neighbour query (HNSW, cosine) with pgvector's iterative
scans, so a small scope inside a big table still finds its rows; a b-tree on the scope lets
the planner search tiny scopes exactly. Candidates above the route's threshold must then
pass the precision guard (``core/guard.py``).

One database may serve several services: each tier has a namespace (the service's, as
for its Redis keys), which is part of every scope and stored on every row, and every purge
(by route, by tag, of everything) deletes only rows of its own namespace.

Every database call goes through a circuit breaker: when PostgreSQL is down or slow, a
lookup is a miss and a store is dropped. Nothing here ever raises into a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import numpy as np

from core.breaker import CircuitBreaker
from core.config import SemanticStoreConfig
from core.entry import CachedResponse
from core.errors import ConfigError, EmbedderError, EntryFormatError, TierUnavailable
from core.metrics import Metrics
from core.semantic.embedders import Embedder
from core.semantic.guard import verify

log = logging.getLogger("sidecache.semantic")

#: Oldest pgvector release whose iterative index scans we rely on.
MIN_PGVECTOR = (0, 8, 4)
#: Purges may touch many rows: they get this much time instead of the lookup timeout.
PURGE_TIMEOUT = 30.0
#: Text embedded once at start when the embedder does not know its dimension yet.
_PROBE_TEXT = "sidecache dimension probe"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_VECTOR_HEADER = struct.Struct("!HH")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SemanticHit:
    """A stored answer that may serve the new query, and why: how similar its query was."""

    entry: CachedResponse
    similarity: float
    matched_text: str


@dataclass(frozen=True, slots=True)
class _Candidate:
    query: str
    blob: bytes
    similarity: float


class _Statements:
    """The SQL of one table and one vector dimension (identifiers are validated, never
    taken from a request)."""

    def __init__(self, table: str, dim: int, config: SemanticStoreConfig) -> None:
        vector = f"embedding::vector({dim})"
        self.table = f"""CREATE TABLE IF NOT EXISTS {table} (
                id bigserial PRIMARY KEY,
                namespace text NOT NULL DEFAULT '',
                scope bytea NOT NULL,
                query_hash bytea NOT NULL,
                dim integer NOT NULL,
                route text NOT NULL,
                tags text[] NOT NULL DEFAULT '{{}}',
                query text NOT NULL,
                embedding vector NOT NULL,
                entry bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL
            )"""
        # Tables made before namespaces: their rows get namespace '' and keep scopes that no
        # namespaced lookup matches, so they are never served and simply expire. (Altered
        # only when the column is missing: ALTER TABLE locks out every lookup meanwhile.)
        self.has_namespace = (
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attname = 'namespace' AND NOT attisdropped)"
        )
        self.add_namespace = f"ALTER TABLE {table} ADD COLUMN namespace text NOT NULL DEFAULT ''"
        self.indexes = [
            # The unique key doubles as the scope index that lets tiny scopes be searched
            # exactly, and makes storing the same query again an update, not a duplicate.
            f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_scope_query ON {table} (scope, query_hash)",
            f"CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at)",
            f"CREATE INDEX IF NOT EXISTS {table}_namespace_route ON {table} (namespace, route)",
            f"CREATE INDEX IF NOT EXISTS {table}_tags ON {table} USING gin (tags)",
        ]
        # One partial HNSW index per dimension: vectors of different sizes share the table
        # (purges cover them all) but are never compared.
        self.index = (
            f"CREATE INDEX IF NOT EXISTS {table}_hnsw_{dim} ON {table} "
            f"USING hnsw (({vector}) vector_cosine_ops) "
            f"WITH (m = {config.hnsw_m:d}, ef_construction = {config.hnsw_ef_construction:d}) "
            f"WHERE dim = {dim}"
        )
        self.index_name = f"{table}_hnsw_{dim}"
        self.nearest = (
            f"SELECT query, entry, 1 - ({vector} <=> $2) AS similarity FROM {table} "
            f"WHERE scope = $1 AND dim = {dim} AND expires_at > to_timestamp($3) "
            f"ORDER BY {vector} <=> $2 LIMIT $4"
        )
        self.store = (
            f"INSERT INTO {table} "
            f"(namespace, scope, query_hash, dim, route, tags, query, embedding, entry, "
            f"expires_at) VALUES ($1, $2, $3, {dim}, $4, $5, $6, $7, $8, to_timestamp($9)) "
            f"ON CONFLICT (scope, query_hash) DO UPDATE SET route = excluded.route, "
            f"tags = excluded.tags, embedding = excluded.embedding, entry = excluded.entry, "
            f"created_at = now(), expires_at = excluded.expires_at"
        )
        self.cleanup = (
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
            f"WHERE expires_at <= to_timestamp($1) ORDER BY expires_at LIMIT $2 "
            f"FOR UPDATE SKIP LOCKED)"
        )
        self.purge_route = f"DELETE FROM {table} WHERE namespace = $1 AND route = $2"
        self.purge_tag = f"DELETE FROM {table} WHERE namespace = $1 AND tags @> ARRAY[$2::text]"
        self.purge_all = f"DELETE FROM {table} WHERE namespace = $1"


class SemanticTier:
    """PostgreSQL + pgvector store of answered queries, searched by meaning within a scope.

    ``start()`` creates what is missing (extension, table, indexes) and refuses to run on
    pgvector older than 0.8.4. If PostgreSQL is unreachable at start, the tier stays
    unavailable and keeps trying in the background. ``namespace`` names the service whose
    rows these are (``Config.l2_prefix`` in ``sidecache run``).
    """

    def __init__(
        self,
        config: SemanticStoreConfig,
        embedder: Embedder,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        namespace: str = "",
    ) -> None:
        if not _IDENTIFIER.match(config.table):
            raise ConfigError(
                "cache.semantic.table: expected a lower-case SQL identifier "
                f'(letters, digits, "_"), got "{config.table}"'
            )
        self._config = config
        self._embedder = embedder
        self._metrics = metrics
        self._clock = clock
        self._namespace = namespace
        self._breaker = CircuitBreaker("semantic", config.breaker, on_change=metrics.tier_changed)
        self._pool: asyncpg.Pool | None = None
        self._sql: _Statements | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True when the store is connected and its circuit is closed."""
        return self._pool is not None and self._breaker.available

    async def start(self) -> None:
        """Connect and create the schema; on a connection failure, retry in the background.

        Raises ``ConfigError`` when pgvector is missing or too old.
        """
        try:
            await self._connect()
        except ConfigError:
            raise
        except (OSError, asyncpg.PostgresError, TimeoutError, EmbedderError) as exc:
            log.warning("semantic tier unavailable at start, will retry: %r", exc)
            self._metrics.tier_available.labels("semantic").set(0)
            self._tasks.append(asyncio.create_task(self._connect_later()))
        self._tasks.append(asyncio.create_task(self._cleanup_loop()))

    async def close(self) -> None:
        """Stop background work and close the connection pool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                pool.terminate()

    async def ensure_schema(self) -> None:
        """Create the extension, table and indexes if missing (idempotent; used by
        ``start()`` and by bulk loaders that drop the index while loading)."""
        if self._sql is None:
            raise TierUnavailable("semantic: not started")
        async with self._admin_connection() as conn:
            await self._create_schema(conn, self._sql)

    async def _connect(self) -> None:
        dim = self._embedder.dim
        if dim == 0:  # an openai embedder learns its dimension from its first answer
            dim = len(await self._embedder.embed(_PROBE_TEXT))
        sql = _Statements(self._config.table, dim, self._config)
        async with self._admin_connection() as conn:
            schema = await self._create_schema(conn, sql)
        pool = await asyncpg.create_pool(
            self._config.dsn,
            min_size=self._config.pool_min,
            max_size=self._config.pool_max,
            command_timeout=self._config.command_timeout,
            statement_cache_size=self._config.statement_cache_size,
            timeout=self._config.connect_timeout,
            init=lambda conn: register_vector(conn, schema),
            # Startup settings survive the RESET ALL a pool runs when a connection returns.
            server_settings={
                "hnsw.ef_search": str(self._config.hnsw_ef_search),
                "hnsw.iterative_scan": "relaxed_order",
                # Plan each lookup for its own scope: b-tree for a tiny scope, HNSW otherwise.
                "plan_cache_mode": "force_custom_plan",
                "application_name": "sidecache",
            },
        )
        self._sql, self._pool = sql, pool
        self._metrics.tier_available.labels("semantic").set(1)
        log.info("semantic tier ready: table %s, dimension %d", self._config.table, dim)

    async def _connect_later(self) -> None:
        while self._pool is None:
            await asyncio.sleep(max(self._config.breaker.open_for, 0.05))
            try:
                await self._connect()
            except ConfigError as exc:
                log.error("semantic tier disabled: %s", exc)
                return
            except (OSError, asyncpg.PostgresError, TimeoutError, EmbedderError) as exc:
                log.debug("semantic tier still unavailable: %r", exc)

    @contextlib.asynccontextmanager
    async def _admin_connection(self) -> Any:
        conn = await asyncpg.connect(self._config.dsn, timeout=self._config.connect_timeout)
        try:
            yield conn
        finally:
            await conn.close()

    async def _create_schema(self, conn: asyncpg.Connection, sql: _Statements) -> str:
        """Create what is missing under an advisory lock (replicas may start together);
        return the schema pgvector lives in."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._config.table)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            row = await conn.fetchrow(
                "SELECT e.extversion, n.nspname FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
            )
            check_pgvector_version(row["extversion"])
            await conn.execute(sql.table)
            if not await conn.fetchval(sql.has_namespace, self._config.table):
                await conn.execute(sql.add_namespace)
            for statement in sql.indexes:
                await conn.execute(statement)
            await conn.execute(sql.index)
        return str(row["nspname"])

    # --- lookup and store ----------------------------------------------------------------------

    async def lookup(
        self, scope: str, text: str, threshold: float, guard: bool = True
    ) -> SemanticHit | None:
        """The stored answer for the nearest query in ``scope`` whose similarity reaches
        ``threshold`` and (when ``guard``) that passes the precision guard; else None."""
        started = time.perf_counter()
        try:
            return await self._lookup(scope, text, threshold, guard)
        finally:
            self._metrics.semantic_lookup_duration.observe(time.perf_counter() - started)

    async def _lookup(
        self, scope: str, text: str, threshold: float, guard: bool
    ) -> SemanticHit | None:
        if self._pool is None or self._sql is None:
            return self._miss("unavailable")
        vector = await self._embed(text)
        if vector is None:
            return self._miss("embedder")
        sql, key = self._sql, self.scope_key(scope)
        try:
            rows = await self._call(
                lambda conn: conn.fetch(
                    sql.nearest, key, vector, self._clock(), self._config.candidates
                )
            )
        except TierUnavailable as exc:
            log.debug("semantic lookup skipped: %s", exc)
            self._metrics.cache_operations.labels("semantic", "get", "error").inc()
            return self._miss("unavailable")
        candidates = sorted(
            (_Candidate(r["query"], r["entry"], float(r["similarity"])) for r in rows),
            key=lambda c: c.similarity,
            reverse=True,
        )
        return self._choose(candidates, text, threshold, guard)

    def _choose(
        self, candidates: list[_Candidate], text: str, threshold: float, guard: bool
    ) -> SemanticHit | None:
        rejection = ""
        for candidate in candidates:
            if candidate.similarity < threshold:
                break
            if guard:
                verdict = verify(candidate.query, text)
                if not verdict.ok:
                    log.debug(
                        "semantic candidate rejected: reason=%s detail=%s similarity=%.3f "
                        "stored=%r new=%r",
                        verdict.reason,
                        verdict.detail,
                        candidate.similarity,
                        candidate.query,
                        text,
                    )
                    self._metrics.semantic_similarity.labels("rejected").observe(
                        candidate.similarity
                    )
                    rejection = rejection or verdict.reason
                    continue
            try:
                entry = CachedResponse.from_bytes(candidate.blob)
            except EntryFormatError:
                self._metrics.corrupt_entries.labels("semantic").inc()
                continue
            self._metrics.semantic_similarity.labels("hit").observe(candidate.similarity)
            self._metrics.semantic_decisions.labels("hit", "none").inc()
            self._metrics.cache_operations.labels("semantic", "get", "hit").inc()
            return SemanticHit(entry, candidate.similarity, candidate.query)
        self._metrics.cache_operations.labels("semantic", "get", "miss").inc()
        if rejection:
            self._metrics.semantic_decisions.labels("rejected", rejection).inc()
            return None
        return self._miss("below_threshold" if candidates else "empty")

    async def store(self, scope: str, route: str, text: str, entry: CachedResponse) -> None:
        """Remember ``entry`` as the answer to ``text`` in ``scope`` until it is no longer
        usable. Dropped (and counted) when the store or the embedder is unavailable."""
        if self._pool is None or self._sql is None:
            self._metrics.cache_operations.labels("semantic", "set", "error").inc()
            return
        vector = await self._embed(text)
        if vector is None:
            self._metrics.cache_operations.labels("semantic", "set", "error").inc()
            return
        sql = self._sql
        args = (
            self._namespace,
            self.scope_key(scope),
            _query_hash(text),
            route,
            list(entry.tags),
            text,
            vector,
            entry.to_bytes(),
            entry.usable_until(),
        )
        try:
            await self._call(lambda conn: conn.execute(sql.store, *args))
        except TierUnavailable as exc:
            log.debug("semantic store dropped: %s", exc)
            self._metrics.cache_operations.labels("semantic", "set", "error").inc()
            return
        self._metrics.cache_operations.labels("semantic", "set", "ok").inc()

    async def purge(
        self, route: str | None = None, tag: str | None = None, everything: bool = False
    ) -> int:
        """Delete this namespace's rows of a route, of a tag, or all of them; return how
        many. (A purge by request is a purge by its ``request:`` tag.)

        Raises ``TierUnavailable`` when the store cannot be reached: a purge that silently
        did nothing would leave wrong answers in place.
        """
        if self._pool is None or self._sql is None:
            raise TierUnavailable("semantic: not connected")
        if everything:
            statement, args = self._sql.purge_all, (self._namespace,)
        elif route is not None:
            statement, args = self._sql.purge_route, (self._namespace, route)
        elif tag is not None:
            statement, args = self._sql.purge_tag, (self._namespace, tag)
        else:
            raise ValueError("purge needs a route, a tag or everything=True")
        try:
            status = await self._call(
                lambda conn: conn.execute(statement, *args, timeout=PURGE_TIMEOUT),
                timeout=PURGE_TIMEOUT,
            )
        except TierUnavailable:
            self._metrics.cache_operations.labels("semantic", "delete", "error").inc()
            raise
        self._metrics.cache_operations.labels("semantic", "delete", "ok").inc()
        return _row_count(status)

    # --- background cleanup --------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.cleanup_interval)
            try:
                deleted = await self.delete_expired()
            except TierUnavailable as exc:
                log.debug("semantic cleanup skipped: %s", exc)
                continue
            if deleted:
                log.debug("semantic cleanup deleted %d expired rows", deleted)

    async def delete_expired(self) -> int:
        """Delete expired rows in batches of ``cleanup_batch`` until none is left."""
        if self._pool is None or self._sql is None:
            return 0
        sql, total = self._sql, 0
        while True:
            status = await self._call(
                lambda conn: conn.execute(sql.cleanup, self._clock(), self._config.cleanup_batch)
            )
            deleted = _row_count(status)
            total += deleted
            if deleted < self._config.cleanup_batch:
                return total
            await asyncio.sleep(0)  # let requests use the pool between batches

    # --- helpers -------------------------------------------------------------------------------

    async def _embed(self, text: str) -> np.ndarray | None:
        started = time.perf_counter()
        try:
            return await self._embedder.embed(text)
        except EmbedderError as exc:
            log.debug("semantic embedding failed: %s", exc)
            return None
        finally:
            self._metrics.semantic_embed_duration.observe(time.perf_counter() - started)

    async def _call(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        timeout: float | None = None,
    ) -> T:
        """Run one database operation through the breaker, bounded in time as a whole
        (waiting for a pooled connection included)."""
        pool = self._pool
        if pool is None:
            raise TierUnavailable("semantic: not connected")

        async def run() -> T:
            async with asyncio.timeout(timeout or self._config.command_timeout):
                async with pool.acquire() as conn:
                    return await operation(conn)

        return await self._breaker.call(run)

    def scope_key(self, scope: str) -> bytes:
        """The stored form of a caller's scope: the namespace, the embedder's id and its
        dimension are part of it, so two services' rows, or vectors of two models, never
        meet."""
        parts = (self._namespace, self._embedder.id, str(self._embedder.dim), scope)
        return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest()

    def _miss(self, reason: str) -> None:
        self._metrics.semantic_decisions.labels("miss", reason).inc()
        if reason != "unavailable":
            self._metrics.cache_operations.labels("semantic", "get", "miss").inc()
        return None


def _query_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def check_pgvector_version(version: str) -> None:
    """Raise ``ConfigError`` naming the installed and the needed version when pgvector is
    older than ``MIN_PGVECTOR``."""
    try:
        found = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        raise ConfigError(f"cache.semantic: cannot read the pgvector version {version!r}") from None
    if found < MIN_PGVECTOR:
        wanted = ".".join(map(str, MIN_PGVECTOR))
        raise ConfigError(
            f"cache.semantic: pgvector {version} is installed, sidecache needs {wanted} or "
            "newer (its iterative index scans); run ALTER EXTENSION vector UPDATE"
        )


async def register_vector(conn: asyncpg.Connection, schema: str) -> None:
    """Send and read pgvector's ``vector`` type in its binary form (numpy float32 arrays)."""
    await conn.set_type_codec(
        "vector",
        schema=schema,
        encoder=_encode_vector,
        decoder=_decode_vector,
        format="binary",
    )


def _encode_vector(vector: np.ndarray) -> bytes:
    values = np.asarray(vector, dtype=">f4")
    return _VECTOR_HEADER.pack(len(values), 0) + values.tobytes()


def _decode_vector(data: bytes) -> np.ndarray:
    dim, _ = _VECTOR_HEADER.unpack_from(data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=_VECTOR_HEADER.size).astype(
        np.float32
    )


def _row_count(status: str) -> int:
    """``"DELETE 12"`` → 12."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0
