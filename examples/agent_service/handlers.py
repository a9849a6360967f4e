"""The JSON routes: agent catalogue, agent selection, document search, health."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .index import SearchFilters, SearchUnavailable
from .state import EMBEDDER, INDEX, SELECTOR, SETTINGS
from .validation import bad_request, json_object, text_field, top_k_field

MAX_SEARCH_RESULTS = 50


async def list_agents(request: web.Request) -> web.Response:
    agents = request.app[SELECTOR].agents
    return web.json_response(
        {"agents": [agent.to_json() for agent in agents]},
        headers={"Surrogate-Key": "agents"},
    )


async def select_agents(request: web.Request) -> web.Response:
    """Rank the agents for ``task``. Other body fields (``request_id``, ...) are ignored."""
    body = await json_object(request)
    task = text_field(body, "task")
    selector = request.app[SELECTOR]
    top_k = top_k_field(body, default=3, maximum=len(selector.agents))
    await asyncio.sleep(request.app[SETTINGS].select_latency)  # stands in for an LLM call
    ranked = selector.rank(task, top_k)
    return web.json_response(
        {"task": task, "agents": [entry.to_json() for entry in ranked]},
        headers={"Surrogate-Key": "agents selection"},
    )


async def search(request: web.Request) -> web.Response:
    body = await json_object(request)
    query = text_field(body, "query")
    top_k = top_k_field(body, default=5, maximum=MAX_SEARCH_RESULTS)
    try:
        filters = SearchFilters.from_json(body.get("filters"))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    index = request.app[INDEX]
    vector = request.app[EMBEDDER].embed_one(query)
    try:
        hits = await index.search(vector, top_k, filters)
    except SearchUnavailable as exc:
        return web.json_response(
            {"error": "search backend unavailable", "detail": str(exc)}, status=503
        )
    # Tags let a cache in front purge every answer that mentions a topic.
    topics = sorted({hit.document.topic for hit in hits})
    return web.json_response(
        {
            "query": query,
            "backend": index.backend,
            "results": [hit.to_json() for hit in hits],
        },
        headers={"Surrogate-Key": " ".join(["search", *(f"topic:{t}" for t in topics)])},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "search_backend": request.app[INDEX].backend})
