"""Wiring: build the aiohttp application and its startup/cleanup contexts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import web

from .catalogue import AGENTS
from .documents import generate_documents
from .embedder import Embedder
from .handlers import healthz, list_agents, search, select_agents
from .mcp import MCP_PATH, mcp_endpoint
from .memory_index import MemoryIndex
from .pgvector_index import PgVectorIndex
from .run_stream import run_agent
from .selection import AgentSelector
from .state import CALLS, DOCUMENTS, EMBEDDER, INDEX, MCP_CALLS, SELECTOR, SETTINGS, Settings
from .stats import STATS_PATH, count_calls, reset_stats, show_stats


async def _models(app: web.Application) -> AsyncIterator[None]:
    # Loading reads 16 MB of weights: keep it off the event loop.
    embedder = await asyncio.to_thread(Embedder)
    app[EMBEDDER] = embedder
    app[SELECTOR] = AgentSelector(embedder, AGENTS)
    yield


async def _index(app: web.Application) -> AsyncIterator[None]:
    documents = generate_documents()
    app[DOCUMENTS] = tuple(documents)
    vectors = app[EMBEDDER].embed([doc.text for doc in documents])
    dsn = app[SETTINGS].pg_dsn
    if dsn is None:
        app[INDEX] = MemoryIndex(documents, vectors)
        yield
        return
    index = await PgVectorIndex.open(dsn, documents, vectors)
    app[INDEX] = index
    try:
        yield
    finally:
        await index.close()


def build_app(
    pg_dsn: str | None, select_latency: float = 0.05, *, step_delay: float = 0.05
) -> web.Application:
    """The reference agent service. Without ``pg_dsn``, search runs in memory."""
    app = web.Application(middlewares=[count_calls])
    app[SETTINGS] = Settings(pg_dsn, select_latency, step_delay)
    app[CALLS] = Counter()
    app[MCP_CALLS] = Counter()
    app.cleanup_ctx.append(_models)
    app.cleanup_ctx.append(_index)
    app.router.add_get("/agents", list_agents)
    app.router.add_post("/agents/select", select_agents)
    app.router.add_post("/agents/run", run_agent)
    app.router.add_post("/search", search)
    app.router.add_post(MCP_PATH, mcp_endpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(STATS_PATH, show_stats)
    app.router.add_delete(STATS_PATH, reset_stats)
    return app
