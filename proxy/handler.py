"""The proxy handler. It reads like the request flow in DESIGN.md:
match → decide → key → lookup → forward → store → answer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from core.cache import Hit, TieredCache
from core.config import RouteConfig
from core.entry import CachedResponse
from core.errors import UpstreamError
from core.keys import RequestKey, derive_key
from core.metrics import Metrics
from core.policy import Decision, decide, may_share, storable_headers, uncacheable_reason
from core.routes import RouteTable
from core.singleflight import SingleFlight
from proxy.forward import Buffered, Streaming, Upstream, request_headers, response_headers

log = logging.getLogger(__name__)

CACHE_STATUS = "Cache-Status"
NO_ROUTE = "none"


class ProxyHandler:
    """Answers one client request from cache or through the upstream."""

    def __init__(
        self, routes: RouteTable, cache: TieredCache, upstream: Upstream, metrics: Metrics
    ) -> None:
        self._routes = routes
        self._cache = cache
        self._upstream = upstream
        self._metrics = metrics
        self._flights: SingleFlight[Buffered | Streaming] = SingleFlight()
        self._timers: dict[tuple[str, str], object] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route = self._routes.match(request.method, request.path)
        result = "pass"
        try:
            if route is None:
                return await self._pass_through(request, NO_ROUTE, "fwd=bypass")
            result, response = await self._handle_route(request, route)
            return response
        except UpstreamError as exc:
            result = "error"
            return _error_response(exc, "fwd=miss" if route is not None else "fwd=bypass")
        finally:
            name = route.name if route is not None else NO_ROUTE
            self._timer(name, result).observe(time.perf_counter() - started)

    async def _handle_route(
        self, request: web.Request, route: RouteConfig
    ) -> tuple[str, web.StreamResponse]:
        body_size = request.content_length if request.body_exists else 0
        decision = decide(route, request.headers, body_size)
        if decision is Decision.BYPASS:
            return "bypass", await self._pass_through(request, route.name, "fwd=bypass")

        body = await request.read()
        key = derive_key(
            route, request.method, request.path, request.query_string, request.headers, body
        )
        if decision is Decision.LOOKUP:
            hit = await self._lookup(route, key)
            if hit is not None:
                return ("semantic" if hit.tier == "semantic" else "hit"), _answer_hit(hit)
            fwd = "fwd=miss"
        else:
            fwd = "fwd=request"
        return "miss", await self._forward_and_store(request, route, key, body, fwd)

    async def _lookup(self, route: RouteConfig, key: RequestKey) -> Hit | None:
        now = time.time()
        entry = self._cache.get_local(key.key)
        if entry is not None and entry.is_fresh(now):
            return Hit(entry, "l1")
        hit = await self._cache.get_remote(key.key)
        if hit is not None and hit.entry.is_fresh(now):
            return hit
        if route.semantic is not None and key.semantic_text is not None:
            assert key.semantic_scope is not None
            hit = await self._cache.get_semantic(
                key.semantic_scope,
                key.semantic_text,
                route.semantic.threshold,
                route.semantic.guard,
            )
            if hit is not None and hit.entry.is_fresh(now):
                self._cache.store(key.key, hit.entry)  # the next identical request hits L1
                return hit
        return None

    async def _forward_and_store(
        self, request: web.Request, route: RouteConfig, key: RequestKey, body: bytes, fwd: str
    ) -> web.StreamResponse:
        method, path_qs, headers = request.method, request.path_qs, request_headers(request)

        async def fetch() -> Buffered | Streaming:
            answer = await self._upstream.fetch(
                route.name, method, path_qs, headers, body, route.max_entry_size
            )
            if isinstance(answer, Buffered):
                self._store(route, key, answer)
            return answer

        answer, joined = await self._flights.do(key.key, fetch)
        if joined:
            self._metrics.coalesced.labels(route.name).inc()
            if isinstance(answer, Streaming) or not may_share(answer.headers):
                # Not shareable: this client gets its own upstream answer.
                answer = await self._upstream.fetch(
                    route.name, method, path_qs, headers, body, route.max_entry_size
                )
        if isinstance(answer, Streaming):
            return await _stream(request, answer.response, answer.prefix, f"{fwd}; detail=stream")
        stored = uncacheable_reason(route, answer.status, answer.headers) is None
        status = f"{fwd}; stored" if stored else fwd
        if joined:
            status += "; collapsed"
        out = web.Response(
            status=answer.status, body=answer.body, headers=_replay(answer.headers.items())
        )
        out.headers[CACHE_STATUS] = f"sidecache; {status}"
        return out

    def _store(self, route: RouteConfig, key: RequestKey, answer: Buffered) -> None:
        reason = uncacheable_reason(route, answer.status, answer.headers)
        if reason is not None:
            log.debug("not storing %s answer: %s", route.name, reason)
            return
        entry = CachedResponse(
            status=answer.status,
            headers=storable_headers(answer.headers),
            body=answer.body,
            ttl=route.ttl,
        )
        semantic = None
        if key.semantic_scope is not None and key.semantic_text is not None:
            semantic = (key.semantic_scope, route.name, key.semantic_text)
        self._cache.store(key.key, entry, semantic)

    async def _pass_through(
        self, request: web.Request, route_name: str, fwd: str
    ) -> web.StreamResponse:
        body = request.content if request.body_exists else None
        upstream = await self._upstream.open(
            route_name, request.method, request.path_qs, request_headers(request), body
        )
        return await _stream(request, upstream, b"", fwd)

    def _timer(self, route: str, result: str):
        timer = self._timers.get((route, result))
        if timer is None:
            timer = self._metrics.request_duration.labels(route, result)
            self._timers[(route, result)] = timer
        return timer


def _answer_hit(hit: Hit) -> web.Response:
    entry = hit.entry
    response = web.Response(status=entry.status, body=entry.body, headers=_replay(entry.headers))
    response.headers[CACHE_STATUS] = f"sidecache; hit; detail={hit.tier}"
    response.headers["Age"] = str(int(entry.age(time.time())))
    if hit.similarity is not None:
        response.headers["Sidecache-Similarity"] = f"{hit.similarity:.4f}"
    return response


def _replay(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Stored or buffered headers as a new response's; the length is the body's own."""
    return CIMultiDict((name, value) for name, value in headers if name.lower() != "content-length")


async def _stream(
    request: web.Request, upstream: aiohttp.ClientResponse, prefix: bytes, fwd: str
) -> web.StreamResponse:
    """Relay an upstream response to the client chunk by chunk as it arrives."""
    try:
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        out.headers.extend(response_headers(upstream))
        out.headers[CACHE_STATUS] = f"sidecache; {fwd}"
        await out.prepare(request)
        if prefix:
            await out.write(prefix)
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Headers are already sent: the only honest signal left is a cut connection.
        log.warning("upstream stream broke off: %r", exc)
        raise
    finally:
        upstream.release()


def _error_response(exc: UpstreamError, fwd: str) -> web.Response:
    body = {"error": exc.reason, "detail": str(exc)}
    response = web.Response(
        status=exc.status, text=json.dumps(body), content_type="application/json"
    )
    response.headers[CACHE_STATUS] = f"sidecache; {fwd}; detail={exc.reason}"
    return response
