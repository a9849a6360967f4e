"""A reference agent service: the kind of upstream sidecache sits in front of.

Routes (all JSON unless noted):

``GET  /agents``
    The catalogue of 20 specialised agents (id, name, description, skills).
``POST /agents/select``  ``{"task": str, "top_k"?: int, "request_id"?: str, ...}``
    Ranks the agents for the task (embedding similarity to each agent's profile blended
    with skill keyword matches) after a simulated compute delay (``--select-latency``).
    Answers ``{"task", "agents": [{"id", "name", "score"}, ...]}``; unknown fields such
    as ``request_id`` are ignored, so they never change the answer.
``POST /search``  ``{"query": str, "top_k"?: int, "filters"?: {"topic"?, "kind"?}}``
    Nearest help-centre documents to the query. With ``--pg-dsn`` they come from the
    ``knowledge_documents`` table in PostgreSQL + pgvector (HNSW, cosine), which is
    created and seeded with ~300 generated documents on start when empty. Without it the
    same documents are searched in memory with numpy, so the service runs with no
    database at all. ``503`` when PostgreSQL is unreachable.
``POST /agents/run``  ``{"task": str, "agent_id"?: str}``
    A ``text/event-stream`` of ``step`` events a short delay apart, ending with ``done``.
``POST /mcp``  one JSON-RPC request per POST (MCP revision 2026-07-28, streamable HTTP)
    The catalogue as tools (one per agent, argument ``task``) and the help-centre
    documents as resources (``help://documents/<id>``): ``server/discover``,
    ``tools/list``, ``tools/call``, ``resources/list`` (100 a page), ``resources/read``,
    ``resources/templates/list``. Lists and reads carry ``ttlMs`` and ``cacheScope:
    "public"``; ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` are checked
    against the body (``400`` ``HeaderMismatch`` otherwise). See ``mcp.py``.
``GET  /healthz``
    Liveness, and which search backend is in use.
``GET  /_stats`` / ``DELETE /_stats``
    Calls served per route since start (or since the last reset), and ``POST /mcp``
    calls per MCP method: the upstream calls a cache in front of the service did not save.

Embeddings come from the WordLlama weights inside the ``wordllama`` wheel; nothing is
downloaded. Responses carry ``Surrogate-Key`` tags (``agents``, ``search``,
``topic:<name>``) so a cache can purge by tag.

Run it alone with ``python -m examples.agent_service --port 8000 [--pg-dsn DSN]``, or
in-process with ``build_app(pg_dsn, select_latency)``.
"""

from .app import build_app

__all__ = ["build_app"]
