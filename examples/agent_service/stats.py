"""Counting calls per route, to show how many upstream calls a cache in front saves."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .state import CALLS, MCP_CALLS

STATS_PATH = "/_stats"


def route_name(request: web.Request) -> str:
    """``METHOD /path/pattern`` of the matched route, or ``unmatched``."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return f"{request.method} {resource.canonical}"


@web.middleware
async def count_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path != STATS_PATH:
        request.app[CALLS][route_name(request)] += 1
    return await handler(request)


def _counts(app: web.Application) -> dict[str, object]:
    """Calls per route, their total, and the ``POST /mcp`` calls per MCP method."""
    calls, mcp_calls = app[CALLS], app[MCP_CALLS]
    return {
        "calls": dict(sorted(calls.items())),
        "total": calls.total(),
        "mcp": dict(sorted(mcp_calls.items())),
    }


async def show_stats(request: web.Request) -> web.Response:
    return web.json_response(_counts(request.app))


async def reset_stats(request: web.Request) -> web.Response:
    """Zero the counters (e.g. between benchmark phases); answers the counts before."""
    before = _counts(request.app)
    request.app[CALLS].clear()
    request.app[MCP_CALLS].clear()
    return web.json_response(before)
