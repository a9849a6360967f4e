"""Counting calls per route, to show how many upstream calls a cache in front saves."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .state import CALLS

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


async def show_stats(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    return web.json_response({"calls": dict(sorted(calls.items())), "total": calls.total()})


async def reset_stats(request: web.Request) -> web.Response:
    """Zero the counters (e.g. between benchmark phases); answers the counts before."""
    calls = request.app[CALLS]
    before = {"calls": dict(sorted(calls.items())), "total": calls.total()}
    calls.clear()
    return web.json_response(before)
