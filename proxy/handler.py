"""The proxy handler. It reads like the request flow in DESIGN.md:
match → decide → key → lookup → forward → store → answer."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from core.cache import Hit, TieredCache
from core.config import RouteConfig
from core.entry import CachedResponse
from core.errors import UpstreamError
from core.keys import RequestKey, derive_key
from core.metrics import Metrics
from core.policy import (
    Decision,
    cache_control,
    decide,
    may_share,
    storable_headers,
    surrogate_keys,
    uncacheable_reason,
)
from core.purge import Generations
from core.routes import RouteTable
from core.singleflight import SingleFlight
from core.tasks import TaskSet
from proxy.forward import Buffered, Streaming, Upstream, request_headers, response_headers

log = logging.getLogger(__name__)

CACHE_STATUS = "Cache-Status"
NO_ROUTE = "none"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The upstream request a cacheable client request turns into (replayable)."""

    route: RouteConfig
    key: RequestKey
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


class ProxyHandler:
    """Answers one client request from cache or through the upstream."""

    def __init__(
        self,
        routes: RouteTable,
        cache: TieredCache,
        upstream: Upstream,
        metrics: Metrics,
        refreshes: TaskSet,
        generations: Generations,
    ) -> None:
        self._routes = routes
        self._generations = generations
        self._cache = cache
        self._upstream = upstream
        self._metrics = metrics
        self._refreshes = refreshes
        self._refreshing: set[str] = set()
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
            route,
            request.method,
            request.rel_url.raw_path,  # as sent: %2F and / are different paths
            request.rel_url.raw_query_string,
            request.headers,
            body,
            self._generations.get(route.name),
        )
        outgoing = Outgoing(
            route, key, request.method, request.path_qs, request_headers(request), body
        )
        hit = await self._lookup(route, key) if decision is Decision.LOOKUP else None
        now = time.time()
        if hit is not None and hit.entry.is_fresh(now):
            self._maybe_refresh_ahead(outgoing, hit.entry, now)
            self._count_hit(route, hit)
            return ("semantic" if hit.tier == "semantic" else "hit"), _answer_hit(hit)
        if hit is not None and hit.entry.may_serve_while_revalidating(now):
            self._refresh_in_background(outgoing)
            self._count_hit(route, hit)
            return "stale", _answer_hit(hit, "fwd=stale; ")
        fallback = hit if hit is not None and hit.entry.may_serve_on_error(now) else None
        fwd = "fwd=miss" if decision is Decision.LOOKUP else "fwd=request"
        if fallback is not None:
            fwd = "fwd=stale"
        try:
            answer, joined = await self._flights.do(key.key, lambda: self._fetch(outgoing))
        except UpstreamError as exc:
            if fallback is None:
                raise
            self._count_hit(route, fallback)
            return "stale", _answer_stale_on_error(fallback, exc.reason)
        if fallback is not None and isinstance(answer, Buffered) and answer.status >= 500:
            self._count_hit(route, fallback)
            return "stale", _answer_stale_on_error(fallback, f"status {answer.status}")
        return "miss", await self._answer_fetched(request, outgoing, answer, joined, fwd)

    async def _lookup(self, route: RouteConfig, key: RequestKey) -> Hit | None:
        """The best usable entry: fresh from the nearest tier, else the freshest stale one."""
        now = time.time()
        local = self._cache.get_local(key.key)
        if local is not None and local.is_fresh(now):
            return Hit(local, "l1")
        remote = await self._cache.get_remote(key.key)
        if remote is not None and remote.entry.is_fresh(now):
            return remote
        if route.semantic is not None and key.semantic_text is not None:
            assert key.semantic_scope is not None
            semantic = await self._cache.get_semantic(
                key.semantic_scope,
                key.semantic_text,
                route.semantic.threshold,
                route.semantic.guard,
            )
            if semantic is not None and semantic.entry.is_fresh(now):
                self._cache.store(key.key, semantic.entry)  # the next identical request hits L1
                return semantic
        stale = [hit for hit in (remote, local and Hit(local, "l1")) if hit is not None]
        return max(stale, key=lambda hit: hit.entry.stored_at, default=None)

    async def _fetch(self, outgoing: Outgoing) -> Buffered | Streaming:
        """One upstream request for a cacheable route; a storable answer is stored."""
        route = outgoing.route
        answer = await self._upstream.fetch(
            route.name,
            outgoing.method,
            outgoing.path_qs,
            outgoing.headers,
            outgoing.body,
            route.max_entry_size,
        )
        if isinstance(answer, Buffered):
            self._store(outgoing, answer)
        return answer

    def _store(self, outgoing: Outgoing, answer: Buffered) -> None:
        route, key = outgoing.route, outgoing.key
        reason = uncacheable_reason(route, answer.status, answer.headers)
        if reason is not None:
            log.debug("not storing %s answer: %s", route.name, reason)
            return
        directives = cache_control(answer.headers.get("Cache-Control"))
        entry = CachedResponse(
            status=answer.status,
            headers=storable_headers(answer.headers),
            body=answer.body,
            ttl=route.ttl,
            stale_while_revalidate=max(
                route.stale_while_revalidate, _seconds(directives, "stale-while-revalidate")
            ),
            stale_if_error=max(route.stale_if_error, _seconds(directives, "stale-if-error")),
            tags=surrogate_keys(answer.headers),
            route=route.name,
        )
        semantic = None
        if key.semantic_scope is not None and key.semantic_text is not None:
            semantic = (key.semantic_scope, route.name, key.semantic_text)
        self._cache.store(key.key, entry, semantic)

    async def _answer_fetched(
        self,
        request: web.Request,
        outgoing: Outgoing,
        answer: Buffered | Streaming,
        joined: bool,
        fwd: str,
    ) -> web.StreamResponse:
        route = outgoing.route
        if joined:
            self._metrics.coalesced.labels(route.name).inc()
            if isinstance(answer, Streaming) or not may_share(answer.headers):
                # Not shareable: this client gets its own upstream answer.
                answer = await self._upstream.fetch(
                    route.name,
                    outgoing.method,
                    outgoing.path_qs,
                    outgoing.headers,
                    outgoing.body,
                    route.max_entry_size,
                )
        if isinstance(answer, Streaming):
            return await _stream(request, answer.response, answer.prefix, f"{fwd}; detail=stream")
        status = fwd
        if uncacheable_reason(route, answer.status, answer.headers) is None:
            status += "; stored"
        if joined:
            status += "; collapsed"
        headers = _replay(answer.headers.items())
        headers[CACHE_STATUS] = f"sidecache; {status}"
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    def _refresh_in_background(self, outgoing: Outgoing) -> None:
        """Refresh a stale or soon-stale entry once per key, however many requests ask."""
        key = outgoing.key.key
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        self._refreshes.spawn(self._refresh(outgoing))

    async def _refresh(self, outgoing: Outgoing) -> None:
        route = outgoing.route.name
        try:
            answer, _ = await self._flights.do(outgoing.key.key, lambda: self._fetch(outgoing))
        except UpstreamError as exc:
            self._metrics.background_refreshes.labels(route, "error").inc()
            log.info("background refresh of %s failed: %s", route, exc)
            return
        finally:
            self._refreshing.discard(outgoing.key.key)
        if isinstance(answer, Streaming):
            answer.response.release()
        self._metrics.background_refreshes.labels(route, "ok").inc()

    def _maybe_refresh_ahead(self, outgoing: Outgoing, entry: CachedResponse, now: float) -> None:
        """Probabilistic early refresh: inside the last ``refresh_ahead`` seconds of the TTL
        the chance rises linearly to 1, so replicas spread their refreshes out."""
        window = outgoing.route.refresh_ahead
        remaining = entry.expires_at - now
        if window > 0 and remaining < window and random.random() > remaining / window:
            self._refresh_in_background(outgoing)

    async def _pass_through(
        self, request: web.Request, route_name: str, fwd: str
    ) -> web.StreamResponse:
        body = request.content if request.body_exists else None
        upstream = await self._upstream.open(
            route_name, request.method, request.path_qs, request_headers(request), body
        )
        return await _stream(request, upstream, b"", fwd)

    def _count_hit(self, route: RouteConfig, hit: Hit) -> None:
        self._metrics.cache_hits.labels(route.name, hit.tier).inc()

    def _timer(self, route: str, result: str):
        timer = self._timers.get((route, result))
        if timer is None:
            timer = self._metrics.request_duration.labels(route, result)
            self._timers[(route, result)] = timer
        return timer


def _seconds(directives: dict[str, str | None], name: str) -> float:
    value = directives.get(name)
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0


def _answer_hit(hit: Hit, fwd: str = "") -> web.Response:
    entry = hit.entry
    headers = _replay(entry.headers)
    headers[CACHE_STATUS] = f"sidecache; hit; {fwd}detail={hit.tier}"
    headers["Age"] = str(int(entry.age(time.time())))
    if hit.similarity is not None:
        headers["Sidecache-Similarity"] = f"{hit.similarity:.4f}"
    return web.Response(status=entry.status, body=entry.body, headers=headers)


def _answer_stale_on_error(hit: Hit, why: str) -> web.Response:
    log.info("serving stale %s entry: upstream failed (%s)", hit.tier, why)
    entry = hit.entry
    headers = _replay(entry.headers)
    headers[CACHE_STATUS] = f"sidecache; fwd=stale; detail=stale-if-error-{hit.tier}"
    headers["Age"] = str(int(entry.age(time.time())))
    return web.Response(status=entry.status, body=entry.body, headers=headers)


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
    headers = {CACHE_STATUS: f"sidecache; {fwd}; detail={exc.reason}"}
    if exc.status == 503:
        headers["Retry-After"] = "1"
    return web.Response(
        status=exc.status, text=json.dumps(body), content_type="application/json", headers=headers
    )
