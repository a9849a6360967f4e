"""Typed keys for what the application holds: settings, models, documents, index, call counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from .documents import Document
from .embedder import Embedder
from .index import DocumentIndex
from .selection import AgentSelector


@dataclass(frozen=True)
class Settings:
    """How the service was started."""

    pg_dsn: str | None
    select_latency: float
    step_delay: float


SETTINGS = web.AppKey("settings", Settings)
EMBEDDER = web.AppKey("embedder", Embedder)
SELECTOR = web.AppKey("selector", AgentSelector)
DOCUMENTS = web.AppKey("documents", tuple[Document, ...])
INDEX = web.AppKey("index", DocumentIndex)
CALLS = web.AppKey("calls", Counter)
#: ``POST /mcp`` calls per JSON-RPC method (``CALLS`` counts them all under one route).
MCP_CALLS = web.AppKey("mcp_calls", Counter)
