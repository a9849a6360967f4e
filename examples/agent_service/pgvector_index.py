"""Document search in PostgreSQL with pgvector: an HNSW index over cosine distance."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import asyncpg
import numpy as np

from .documents import Document
from .index import Hit, SearchFilters, SearchUnavailable

# Any constant will do, as long as every service instance uses the same one: it makes
# concurrent starts create and seed the schema one at a time.
_SCHEMA_LOCK = 7_340_217

_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS knowledge_documents (
    id        integer PRIMARY KEY,
    title     text NOT NULL,
    body      text NOT NULL,
    topic     text NOT NULL,
    kind      text NOT NULL,
    embedding vector({dim}) NOT NULL
);
CREATE INDEX IF NOT EXISTS knowledge_documents_embedding_hnsw
    ON knowledge_documents USING hnsw (embedding vector_cosine_ops);
"""

_INSERT = """
INSERT INTO knowledge_documents (id, title, body, topic, kind, embedding)
VALUES ($1, $2, $3, $4, $5, $6)
"""

_SEARCH = """
SELECT id, title, body, topic, kind, 1 - (embedding <=> $1) AS score
FROM knowledge_documents
WHERE ($2::text[] IS NULL OR topic = ANY($2)) AND ($3::text[] IS NULL OR kind = ANY($3))
ORDER BY embedding <=> $1
LIMIT $4
"""

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _encode_vector(vector: np.ndarray) -> bytes:
    # pgvector's binary wire format: int16 dimensions, int16 unused, big-endian float4s
    values = np.asarray(vector, dtype=">f4")
    return struct.pack(">hh", len(values), 0) + values.tobytes()


def _decode_vector(data: bytes) -> np.ndarray:
    dim = struct.unpack_from(">h", data)[0]
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


async def _register_vector(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "vector",
        schema="public",
        encoder=_encode_vector,
        decoder=_decode_vector,
        format="binary",
    )


def _names(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


class PgVectorIndex:
    """Searches the ``knowledge_documents`` table through a pool of asyncpg connections."""

    backend = "pgvector"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, documents: Sequence[Document], vectors: np.ndarray
    ) -> PgVectorIndex:
        """Create the extension, table and index if missing, seed an empty table, open a pool."""
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(_SCHEMA.format(dim=vectors.shape[1]))
            # The codec can only be registered once the extension has created the type.
            await _register_vector(conn)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                if not await conn.fetchval("SELECT count(*) FROM knowledge_documents"):
                    await conn.executemany(
                        _INSERT,
                        [
                            (doc.id, doc.title, doc.body, doc.topic, doc.kind, vector)
                            for doc, vector in zip(documents, vectors, strict=True)
                        ],
                    )
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=10,
            timeout=5,
            command_timeout=5,
            init=_register_vector,
            # A filtered HNSW scan otherwise stops after ef_search candidates and can return
            # fewer than top_k rows. Set at connect time so the pool's RESET ALL keeps it.
            server_settings={"hnsw.iterative_scan": "strict_order"},
        )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def search(self, vector: np.ndarray, top_k: int, filters: SearchFilters) -> list[Hit]:
        try:
            rows = await self._pool.fetch(
                _SEARCH, vector, _names(filters.topics), _names(filters.kinds), top_k
            )
        except _DRIVER_ERRORS as exc:
            raise SearchUnavailable(f"PostgreSQL: {exc!r}") from exc
        return [
            Hit(
                Document(row["id"], row["title"], row["body"], row["topic"], row["kind"]),
                float(row["score"]),
            )
            for row in rows
        ]
