"""The request engine: the steps of DESIGN.md's request flow, written once for both front
ends: match → decide → key → lookup → forward → store → answer.

A front end turns what it read into a ``Request`` and writes the ``Reply`` it gets back;
``handle`` never raises for a request's own sake (an upstream failure, a client's slow body
and the like are replies). What differs between a ``json`` and an ``http`` (RFC 9111) route is
asked of the route's mode (``core.modes``); the few steps only HTTP caching has (variants by
``Vary``, conditional revalidation, a client's own conditional request, invalidation by unsafe
methods) are marked where they happen. A mode that records event streams (``openai``) has
its streamed answers relayed through a tee (``proxy/streams.py``): shared live with identical
requests, stored once complete.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace

from multidict import CIMultiDict, MultiMapping

from core import http_cache, mcp, ranges
from core.cache import Hit
from core.config import RouteConfig
from core.decisions import (
    Fetch,
    Refuse,
    Relay,
    Serve,
    after_lookup,
    fallback_instead,
    may_share,
    refresh_ahead_due,
)
from core.entry import CachedResponse
from core.errors import UpstreamError
from core.headers import (
    Target,
    combined,
    effective_target,
    end_to_end,
    is_trusted,
    replayed,
    upstream_headers,
)
from core.invalidation import ByTag
from core.keys import KeyCache, RequestKey, derive_key, variant_key
from core.logs import access_enabled, access_line
from core.modes import CLIENT_CONDITIONALS, MODES, PLAIN, Form, McpMode
from core.outcome import (
    Outcome,
    failed,
    fetched,
    fresh_hit,
    passed,
    stale_on_error,
    streamed,
)
from core.policy import Decision, decide, is_event_stream
from core.singleflight import SingleFlight
from core.sse import Event
from proxy.event_relay import EventRelay
from proxy.exchange import BodyTimeout, BufferedBody, Keyed, Reply, Request
from proxy.forward import (
    IDEMPOTENT_METHODS,
    REPLAY_LIMIT,
    UPSTREAM_SECONDS,
    Buffered,
    Streaming,
)
from proxy.runtime import Runtime
from proxy.streams import StreamTee, StreamTees
from proxy.upstream_client import Response

log = logging.getLogger(__name__)

CACHE_STATUS = "Cache-Status"
#: Pass-through answers up to this size (with a known length) are read whole and sent in
#: one write; bigger ones are relayed as they arrive.
SMALL_ANSWER = 64 * 1024
NO_ROUTE = "none"
#: Request byte strings whose fast-path key is remembered (the memo is emptied when full).
FAST_KEY_MEMO = 4096
FAST_KEY_MEMO_MAX = 4096
_UNKNOWN = object()  # (not in the fast-key memo yet)
PASSED = passed("pass", "bypass")  # no route: relayed as it is
BYPASSED = passed("bypass", "bypass")  # a cacheable route, but the request said no-store
BODY_TIMEOUT = Outcome("error", detail="body-timeout")
HEADER_MISMATCH = Outcome("error", detail="header-mismatch")  # MCP: refused, not forwarded
#: When the engine began on the current request (time to a stream's first chunk).
STARTED: ContextVar[float] = ContextVar("started", default=0.0)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The upstream request a cacheable client request turns into (replayable)."""

    route: RouteConfig
    key: RequestKey
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes
    #: A stored entry to revalidate with a conditional request (HTTP mode).
    stale: CachedResponse | None = None
    #: The form of answer asked for: identical requests share a call only within one.
    form: Form = PLAIN

    @property
    def flight(self) -> str:
        return self.key.key + self.form.name


@dataclass(frozen=True, slots=True)
class Fetched:
    """An upstream answer to a cacheable request and the entry stored from it (``None``:
    not stored). Concurrent identical requests may share it only through ``entry``."""

    answer: Buffered | Streaming
    entry: CachedResponse | None = None
    #: A recorded event stream the requests of this key may join (``proxy/streams.py``).
    tee: StreamTee | None = None


class Engine:
    """Answers one request from cache or through the upstream, whichever front end read it."""

    def __init__(self, runtime: Runtime) -> None:
        self._routes = runtime.routes
        self._cache = runtime.cache
        self._upstream = runtime.upstream
        self._metrics = runtime.metrics
        self._refreshes = runtime.refreshes
        self._generations = runtime.generations
        self._purger = runtime.purger
        self._refreshing: set[str] = set()
        self._flights: SingleFlight[Fetched] = SingleFlight()
        self._tees = StreamTees(runtime.refreshes)
        self._timers: dict[tuple[str, str], object] = {}
        self._hit_counters: dict[tuple[str, str], object] = {}
        self._tally = runtime.metrics.tally
        self._access_log = access_enabled()
        self._keys = KeyCache()
        self._fast_keys: dict[object, Keyed | None] = {}
        self._trusted = runtime.config.server.trusted_proxies
        self.body_timeout = runtime.config.server.body_timeout

    def target(self, raw_target: str, headers: MultiMapping[str], scheme: str, peer: str) -> Target:
        """The effective target of a request line (see ``core.headers``)."""
        return effective_target(raw_target, headers, scheme, is_trusted(peer, self._trusted))

    def route_name(self, request: Request) -> str:
        route = self._routes.match(request.method, request.path)
        return route.name if route is not None else NO_ROUTE

    async def handle(self, request: Request) -> Reply:
        """The reply to ``request``. The front end records it with ``record`` once written."""
        UPSTREAM_SECONDS.set(None)
        STARTED.set(time.perf_counter())
        keyed = request.keyed
        if keyed is not None and keyed.generation != self._generations.get(keyed.route.name):
            keyed = request.keyed = None  # a purge since: keyed anew under the new generation
        if keyed is not None:
            route: RouteConfig | None = keyed.route
        else:
            route = self._routes.match(request.method, request.path)
        name = route.name if route is not None else NO_ROUTE
        try:
            if route is None:
                reply = await self._pass_through(request, NO_ROUTE, PASSED)
            else:
                reply = await self._handle_route(request, route)
        except UpstreamError as exc:
            reply = _error_reply(exc, failed("miss" if route is not None else "bypass", exc.reason))
        except BodyTimeout:
            self._metrics.connections_closed.labels("body_timeout").inc()
            reply = _body_timeout_reply(self.body_timeout)
        reply.route = name
        return reply

    def record(self, request: Request, reply: Reply | None, status: int, elapsed: float) -> None:
        """The request-duration metric and the access log line of one answered request
        (``reply`` ``None``: the client went away first)."""
        route = reply.route if reply is not None else self.route_name(request)
        label = reply.outcome.label if reply is not None else PASSED.label
        upstream = UPSTREAM_SECONDS.get()
        self._record(request.method, request.path, route, label, status, elapsed, upstream)

    # --- the fast path's questions (proxy/fastpath.py) ------------------------------------

    def fast_key(
        self,
        raw: bytes,
        method: str,
        path: str,
        raw_target: str,
        headers: MultiMapping[str],
        body: bytes,
        peer: str,
    ) -> Keyed | None:
        """The route and key of a request the fast path may answer at once from the exact
        tiers: a ``json`` route and an ordinary lookup. ``path`` is the decoded path routes
        match. ``None``: leave it to ``handle``.

        Remembered by the request's bytes (``raw``, head and body): the same bytes always
        give the same route, decision and key while the route's purge generation stays, so
        a repeated request costs one dictionary lookup. (Whether the peer is a trusted proxy
        is part of the memo when trusted proxies are configured.)"""
        if len(raw) > FAST_KEY_MEMO_MAX:  # (the memo stays a few MiB)
            return self._fast_key(method, path, raw_target, headers, body, peer)
        memo = (raw, is_trusted(peer, self._trusted)) if self._trusted else raw
        known = self._fast_keys.get(memo, _UNKNOWN)
        if known is None:
            return None
        if isinstance(known, Keyed) and self._generations.get(known.route.name) == known.generation:
            return known
        found = self._fast_key(method, path, raw_target, headers, body, peer)
        if len(self._fast_keys) >= FAST_KEY_MEMO:
            self._fast_keys.clear()
        self._fast_keys[memo] = found
        return found

    def _fast_key(
        self,
        method: str,
        path: str,
        raw_target: str,
        headers: MultiMapping[str],
        body: bytes,
        peer: str,
    ) -> Keyed | None:
        route = self._routes.match(method, path)
        if route is None or not MODES[route.mode].fast_hits:
            return None
        if decide(route, headers, len(body)) is not Decision.LOOKUP:
            return None
        target = self.target(raw_target, headers, "http", peer)
        generation = self._generations.get(route.name)
        # (Not through ``_keys``: the fast path's own memo, by the request's bytes, is
        # consulted first, so a second memo would only ever miss.)
        key = derive_key(route, method, target, headers, body, generation)
        return Keyed(route, key, generation, target)

    def fresh_local(self, route: RouteConfig, key: RequestKey) -> CachedResponse | None:
        """A fresh L1 entry with no refresh due (nothing is counted: see ``record_fast_hit``)."""
        entry = self._cache.get_local(key.key, count=False)
        return entry if entry is not None and self._servable(route, entry) else None

    def _servable(self, route: RouteConfig, entry: CachedResponse) -> bool:
        now = time.time()
        return entry.is_fresh(now) and not refresh_ahead_due(route, entry, now, random.random)

    def record_fast_hit(
        self, route: RouteConfig, method: str, path: str, status: int, elapsed: float
    ) -> None:
        """Count an L1 hit the fast path answered exactly as ``handle`` would have. (A
        request the fast path leaves to ``handle`` has not been counted at all.)"""
        self._cache.count_hit_from("l1")
        self._count_hit(route, "l1")
        self._record(method, path, route.name, "hit", status, elapsed)

    def _record(
        self,
        method: str,
        path: str,
        route: str,
        result: str,
        status: int,
        elapsed: float,
        upstream: float | None = None,
    ) -> None:
        self._tally.observe(self._timer(route, result), elapsed)
        if self._access_log:
            access_line(
                method=method,
                path=path,
                route=route,
                cache=result,
                status=status,
                duration=elapsed,
                upstream_duration=upstream,
            )

    # --- the steps --------------------------------------------------------------------------

    async def _handle_route(self, request: Request, route: RouteConfig) -> Reply:
        mode = MODES[route.mode]
        if isinstance(mode, McpMode):  # JSON-RPC calls: classified, keyed and answered apart
            return await self._handle_call(request, route, mode)
        keyed = request.keyed  # (the fast front end decided and keyed it: see ``Keyed``)
        if keyed is not None:
            decision = Decision.LOOKUP
        else:
            decision = mode.decide(route, request.headers, request.body.length)
        if decision is Decision.BYPASS:
            return await self._pass_through(request, route.name, BYPASSED)

        body = await request.body.read()
        form = mode.request_form(route, request.path, body)
        if form.refused is not None:  # its mode says no, having read the body
            outcome = passed("bypass", "bypass", detail=form.refused)
            return await self._pass_through(
                replace(request, body=BufferedBody(body)), route.name, outcome
            )
        if keyed is not None:
            key = keyed.key
        else:
            method, keyed_body = mode.keyed_request(request.method, body, request.headers)
            generation = self._generations.get(route.name)
            key = self._keys.derive(
                route, method, request.target, request.headers, keyed_body, generation
            )
        hit = (
            await self._lookup(route, key, request.headers) if decision is Decision.LOOKUP else None
        )
        limits = mode.request_limits(request.headers)
        step = after_lookup(route, request.method, decision, hit, time.time(), limits=limits)
        if isinstance(step, Serve):
            if step.refresh:
                self._refresh_in_background(
                    self._outgoing(request, route, key, body, form, step.hit.entry)
                )
            self._count_hit(route, step.hit.tier, step.hit.entry, form)
            return _answer_hit(request, route, step.hit, step.outcome, form)
        if isinstance(step, Relay):
            return await self._pass_through(request, route.name, step.outcome)
        if isinstance(step, Refuse):
            return _refused_by_request(step)
        outgoing = self._outgoing(request, route, key, body, form, step.revalidate)
        return await self._forward(request, outgoing, step)

    async def _forward(self, request: Request, outgoing: Outgoing, step: Fetch) -> Reply:
        """A miss (or a stale entry to revalidate): one upstream call per key at a time."""
        route, key, form = outgoing.route, outgoing.key, outgoing.form
        if step.fwd == "miss" and (hit := self._stored_meanwhile(route, key, request.headers)):
            self._count_hit(route, hit.tier, hit.entry, form)
            return _answer_hit(request, route, hit, fresh_hit(hit.tier), form)
        if step.fwd == "miss" and (tee := self._tees.live(outgoing.flight)) is not None:
            return self._join(route, tee, joined=True)
        fallback = step.fallback
        try:
            result, joined = await self._flights.do(outgoing.flight, lambda: self._fetch(outgoing))
            shared = result.tee is not None and result.tee.joinable
            if joined and not shared and not may_share(result.entry, request.headers):
                # The answer is not one this client may be given (not stored, or another
                # variant): it makes its own call instead.
                result, joined = await self._fetch(outgoing), False
        except UpstreamError as exc:
            stale = fallback or step.offline
            if stale is None:
                raise
            self._count_hit(route, stale.tier, stale.entry, form)
            return _answer_stale_on_error(route, stale, exc.reason, form)
        answer = result.answer
        if isinstance(answer, Buffered) and fallback_instead(fallback, answer.status):
            assert fallback is not None
            self._count_hit(route, fallback.tier, fallback.entry, form)
            return _answer_stale_on_error(route, fallback, f"status {answer.status}", form)
        if result.tee is not None:
            return self._join(route, result.tee, joined, step.fwd)
        if joined:
            self._metrics.coalesced.labels(route.name).inc()
        return _answer_fetched(request, route, answer, joined, step.fwd)

    def _join(self, route: RouteConfig, tee: StreamTee, joined: bool, fwd: str = "miss") -> Reply:
        """One client's copy of a recorded upstream stream (the one its request opened, or an
        identical one under way: the chunks sent so far at once, the rest live)."""
        reader = tee.join(self._first_chunk_timer(route, "joined" if joined else "miss"))
        assert reader is not None, "joined only while joinable"
        if joined:
            self._metrics.coalesced.labels(route.name).inc()
        outcome = streamed(fwd, collapsed=joined)
        headers = end_to_end(tee.headers)
        headers[CACHE_STATUS] = outcome.cache_status
        return Reply(tee.status, headers, outcome, stream=reader)

    def _first_chunk_timer(self, route: RouteConfig, result: str):
        started, histogram = STARTED.get(), self._metrics.llm_first_chunk.labels(route.name, result)
        return lambda: histogram.observe(time.perf_counter() - started)

    def _stored_meanwhile(
        self, route: RouteConfig, key: RequestKey, headers: Mapping[str, str]
    ) -> Hit | None:
        """An answer another request stored in L1 while this one asked the slower tiers
        (Redis, the semantic index): single-flight covers the whole miss, so it is not
        fetched a second time. (With L1 alone nothing ran since the lookup.)"""
        if not self._cache.remotes and route.semantic is None:
            return None
        entry = self._cache.get_local(key.key, count=False)
        if entry is None or not entry.is_fresh(time.time()):
            return None
        return Hit(entry, "l1") if http_cache.selects(entry.vary, headers) else None

    def _outgoing(
        self,
        request: Request,
        route: RouteConfig,
        key: RequestKey,
        body: bytes,
        form: Form,
        stale: CachedResponse | None = None,
    ) -> Outgoing:
        headers = upstream_headers(request.headers, request.peer, request.target)
        for name in CLIENT_CONDITIONALS:
            headers.popall(name, None)
        path_qs = request.target.path_qs
        return Outgoing(route, key, request.method, path_qs, headers, body, stale, form)

    async def _lookup(
        self, route: RouteConfig, key: RequestKey, headers: Mapping[str, str]
    ) -> Hit | None:
        """The best usable entry: fresh from the nearest tier, else the freshest stale one;
        then, for semantic routes, the nearest answered query."""
        hit = await self._lookup_exact(key.key)
        if hit is not None and hit.entry.vary:  # HTTP mode: is it the variant asked for?
            hit = await self._lookup_variant(key.key, hit, headers)
        if hit is not None and hit.entry.is_fresh(time.time()):
            return hit
        if route.semantic is not None and key.semantic_text is not None:
            assert key.semantic_scope is not None
            semantic = await self._cache.get_semantic(
                key.semantic_scope,
                key.semantic_text,
                route.semantic.threshold,
                route.semantic.guard,
            )
            if semantic is not None and semantic.entry.is_fresh(time.time()):
                self._cache.store(key.key, semantic.entry)  # the next identical request hits L1
                return semantic
        return hit

    async def _lookup_exact(self, key: str) -> Hit | None:
        now = time.time()
        local = self._cache.get_local(key)
        if local is not None and local.is_fresh(now):
            return Hit(local, "l1")
        remote = await self._cache.get_remote(key)
        if remote is not None and remote.entry.is_fresh(now):
            return remote
        stale = [hit for hit in (remote, local and Hit(local, "l1")) if hit is not None]
        return max(stale, key=lambda hit: hit.entry.stored_at, default=None)

    async def _lookup_variant(self, key: str, hit: Hit, headers: Mapping[str, str]) -> Hit | None:
        if http_cache.selects(hit.entry.vary, headers):
            return hit
        names = tuple(name for name, _ in hit.entry.vary)
        wanted = http_cache.vary_values(names, headers)
        variant = await self._lookup_exact(variant_key(key, wanted))
        return variant if variant is not None and variant.entry.vary == wanted else None

    async def _fetch(self, outgoing: Outgoing) -> Fetched:
        """One upstream request for a cacheable route; a storable answer is stored. A stale
        entry with validators is revalidated: a 304 refreshes it instead of a new body."""
        route, stale = outgoing.route, outgoing.stale
        headers = outgoing.headers
        conditions = http_cache.validators(dict(stale.headers)) if stale is not None else {}
        if conditions and MODES[route.mode].revalidates:
            headers = headers.copy()
            headers.update(conditions)
        epoch, request_time = self._purger.epoch, time.time()
        answer = await self._upstream.fetch(
            route.name,
            outgoing.method,
            outgoing.path_qs,
            headers,
            outgoing.body,
            route.max_entry_size,
        )
        if isinstance(answer, Streaming):
            return Fetched(answer, tee=self._tee(outgoing, answer, request_time, epoch))
        if answer.status == 304 and conditions and stale is not None:
            merged = http_cache.merge_not_modified(stale.headers, answer.headers)
            answer = Buffered(stale.status, CIMultiDict(merged), stale.body, revalidated=True)
        times = (request_time, time.time())
        return Fetched(answer, self._store(outgoing, answer, times, epoch))

    def _tee(
        self, outgoing: Outgoing, answer: Streaming, request_time: float, epoch: int
    ) -> StreamTee | None:
        """An event stream its mode records, whose headers allow storing it, goes through a
        tee: identical requests join it, and it is stored once it ended complete (unless a
        purge naming it ran since purge ``epoch``)."""
        route, response = outgoing.route, answer.response
        mode = MODES[route.mode]
        if not mode.records_streams or not is_event_stream(response.headers):
            return None
        if mode.unstorable_reason(route, outgoing.headers, response.status, response.headers):
            return None
        headers = end_to_end(response.headers)

        def store(body: bytes) -> None:
            times = (request_time, time.time())
            self._store(outgoing, Buffered(response.status, headers, body), times, epoch)

        tee = StreamTee(
            response,
            answer.prefix,
            limit=route.max_entry_size,
            judge=mode.unstorable_stream,
            store=store,
        )
        self._tees.start(outgoing.flight, tee)
        return tee

    def _store(
        self, outgoing: Outgoing, answer: Buffered, times: tuple[float, float], epoch: int
    ) -> CachedResponse | None:
        """Store a storable answer fetched from purge ``epoch`` on; returns the entry
        stored, or ``None``."""
        route, key = outgoing.route, outgoing.key
        mode = MODES[route.mode]
        reason = mode.unstorable_reason(route, outgoing.headers, answer.status, answer.headers)
        reason = reason or mode.unstorable_answer(route, answer.headers, answer.body)
        if reason is not None:
            log.debug("not storing %s answer: %s", route.name, reason)
            return None
        entry = mode.entry(
            route,
            outgoing.headers,
            outgoing.path_qs,
            answer.status,
            answer.headers,
            answer.body,
            times,
            (key.request_tag,),
        )
        if not self._purger.stores_since(epoch, entry):
            log.debug("not storing %s answer: a purge naming it ran meanwhile", route.name)
            return None
        semantic = None
        if key.semantic_scope is not None and key.semantic_text is not None:
            semantic = (key.semantic_scope, route.name, key.semantic_text)
        wanted = self._still_wanted(epoch, entry)
        stored = self._cache.store(key.key, entry, semantic, wanted)
        if entry.vary:  # HTTP mode: each variant also under its own key
            variant = variant_key(key.key, entry.vary)
            stored = self._cache.store(variant, entry, wanted=wanted) or stored
        # (Cache-Status says "stored" only when some tier took it.)
        answer.stored = stored
        return entry if stored else None

    def _still_wanted(self, epoch: int, entry: CachedResponse) -> Callable[[], bool]:
        """Asked again as each background write starts: a purge may come meanwhile."""
        return lambda: self._purger.stores_since(epoch, entry)

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
            result, _ = await self._flights.do(outgoing.flight, lambda: self._fetch(outgoing))
        except UpstreamError as exc:
            self._metrics.background_refreshes.labels(route, "error").inc()
            log.info("background refresh of %s failed: %s", route, exc)
            return
        finally:
            self._refreshing.discard(outgoing.key.key)
        if isinstance(result.answer, Streaming) and result.tee is None:
            result.answer.response.release()
        self._metrics.background_refreshes.labels(route, "ok").inc()

    async def _pass_through(self, request: Request, route_name: str, outcome: Outcome) -> Reply:
        body = await self._pass_through_body(request)
        headers = upstream_headers(request.headers, request.peer, request.target)
        upstream = await self._upstream.open(
            route_name, request.method, request.target.path_qs, headers, body
        )
        if http_cache.invalidates(request.method, upstream.status):
            await self._invalidate_uris(request, upstream)
        length = upstream.content_length
        if request.method == "HEAD" or length is None or length > SMALL_ANSWER:
            return _relay(upstream, b"", outcome)
        # A small answer of known length goes out in one write instead of three.
        answer = await self._upstream.read_answer(upstream, SMALL_ANSWER)
        if isinstance(answer, Streaming):  # an event stream after all
            return _relay(answer.response, answer.prefix, outcome)
        headers = replayed(answer.headers.items())
        headers[CACHE_STATUS] = outcome.cache_status
        return Reply(answer.status, headers, outcome, body=answer.body)

    async def _pass_through_body(self, request: Request) -> bytes | AsyncIterator[bytes] | None:
        """What to send on: nothing, the body the front end holds, a small idempotent
        request's body read whole (so the upstream client may send it again after a stale
        pooled connection), or a stream."""
        body = request.body
        if body.whole is not None:
            return body.whole or None
        length = body.length
        if request.method in IDEMPOTENT_METHODS and length is not None and length <= REPLAY_LIMIT:
            return await body.read()
        return body.stream()

    async def _invalidate_uris(self, request: Request, upstream: Response) -> None:
        """HTTP mode: a successful unsafe request invalidates what is stored for its URI and
        its same-origin Location / Content-Location (RFC 9111 §4.4), on every replica,
        before its answer is sent: a request that follows it never sees the old entry."""
        if self._routes.http_route(request.path) is None:
            return
        for uri in http_cache.invalidated_uris(request.target.path_qs, upstream.headers):
            await self._purger.purge(ByTag(http_cache.uri_tag(uri)))

    # --- JSON-RPC calls (mode: mcp; the rules are core/mcp.py) ------------------------------

    async def _handle_call(self, request: Request, route: RouteConfig, mode: McpMode) -> Reply:
        """An MCP endpoint: the flow above with the call classified from its body, keys
        per cache scope, hits answered with the requester's id (JSON or an event stream),
        and every event stream relayed read for change notifications."""
        method = None
        reply: Reply | None = None
        try:
            decision = mode.decide(route, request.headers, request.body.length)
            if request.method != "POST" or decision is Decision.BYPASS:
                reply = await self._relay_call(request, route, BYPASSED)
                return reply
            body = await request.body.read()
            request.body = BufferedBody(body)  # read once; a pass-through sends these bytes
            call = mode.classify(route, request.headers, body)
            if isinstance(call, mcp.Refused):
                reply = _refused_reply(call)
                return reply
            method = call.method if call is not None else None
            if call is None or call.uncacheable is not None:
                reply = await self._relay_call(request, route, BYPASSED)
                return reply
            reply = await self._cached_call(request, route, mode, call, decision)
            return reply
        finally:
            label = reply.outcome.label if reply is not None else "error"
            self._metrics.mcp_calls.labels(route.name, mcp.metric_method(method), label).inc()

    async def _cached_call(
        self,
        request: Request,
        route: RouteConfig,
        mode: McpMode,
        call: mcp.Call,
        decision: Decision,
    ) -> Reply:
        key_route, bodies = mode.keyed(route, call, request.headers)
        generation = self._generations.get(route.name)
        keys = {
            scope: self._keys.derive(
                key_route, "POST", request.target, request.headers, keyed, generation
            )
            for scope, keyed in bodies.items()
        }
        accept = request.headers.get("Accept")
        if decision is Decision.LOOKUP:
            for key in keys.values():  # public first: the server said anyone may share it
                hit = await self._lookup_exact(key.key)
                if hit is None or not hit.entry.is_fresh(time.time()):
                    continue
                reply = _answer_call(mode, call, hit.entry, accept, fresh_hit(hit.tier))
                if reply is not None:
                    self._count_hit(route, hit.tier)
                    return reply
        private = keys[mcp.PRIVATE]
        outgoing = self._outgoing(request, route, private, request.body.whole or b"", PLAIN)
        fetch = functools.partial(self._fetch_call, outgoing, call, keys)
        epoch = self._purger.epoch  # (for a streamed answer: see _call_events)
        result, joined = await self._flights.do(private.key, fetch)
        if joined:
            # Same key, so same tenant: the leader's stored result, with this caller's id.
            shared = result.entry and _answer_call(
                mode, call, result.entry, accept, fetched("miss", stored=False, collapsed=True)
            )
            if shared:
                self._metrics.coalesced.labels(route.name).inc()
                return shared
            result = await self._fetch_call(outgoing, call, keys)
        answer = result.answer
        if isinstance(answer, Streaming):
            on_event = self._call_events(route, answer.response.status, call, keys, epoch)
            relay = EventRelay(answer.response, answer.prefix, on_event)
            return _relay(relay, answer.prefix, streamed("miss"))  # type: ignore[arg-type]
        return _answer_fetched(request, route, answer, False, "miss")

    async def _fetch_call(
        self, outgoing: Outgoing, call: mcp.Call, keys: dict[str, RequestKey]
    ) -> Fetched:
        route, epoch = outgoing.route, self._purger.epoch
        answer = await self._upstream.fetch(
            route.name,
            outgoing.method,
            outgoing.path_qs,
            outgoing.headers,
            outgoing.body,
            route.max_entry_size,
        )
        if isinstance(answer, Streaming):
            return Fetched(answer)
        message = mcp.parse_message(answer.body.decode("utf-8", "replace"))
        await self._invalidate(route, mcp.invalid_cursor_tags(call, message), "cursor")
        entry = self._store_call(route, call, keys, answer.status, message, epoch)
        answer.stored = entry is not None
        return Fetched(answer, entry)

    def _store_call(
        self,
        route: RouteConfig,
        call: mcp.Call,
        keys: dict[str, RequestKey],
        status: int,
        message: object,
        epoch: int,
    ) -> CachedResponse | None:
        mode = MODES[route.mode]
        assert isinstance(mode, McpMode)
        verdict = mode.stored(route, call, status, message, time.time())
        if isinstance(verdict, str):
            log.debug("not storing %s %s answer: %s", route.name, call.method, verdict)
            return None
        scope, entry = verdict
        key = keys[scope]
        entry = replace(entry, tags=(*entry.tags, key.request_tag))
        if not self._purger.stores_since(epoch, entry):
            log.debug("not storing %s %s answer: a purge naming it ran", route.name, call.method)
            return None
        wanted = self._still_wanted(epoch, entry)
        return entry if self._cache.store(key.key, entry, wanted=wanted) else None

    def _call_events(
        self,
        route: RouteConfig,
        status: int,
        call: mcp.Call | None = None,
        keys: dict[str, RequestKey] | None = None,
        epoch: int = 0,
    ):
        """What an MCP route does with each event of a stream it relays: a change
        notification drops what it makes stale (before the client reads it); the final
        response to a cacheable call is stored when the rules allow, unless a purge ran
        since purge ``epoch`` (a notification in this very stream counts)."""

        async def on_event(event: Event) -> None:
            message = mcp.parse_message(event.data)
            tags = mcp.invalidated_tags(message)
            if tags:
                await self._invalidate(route, tags, "notification")
            elif call is not None and keys is not None and mcp.final_response(message, call):
                await self._invalidate(route, mcp.invalid_cursor_tags(call, message), "cursor")
                self._store_call(route, call, keys, status, message, epoch)

        return on_event

    async def _relay_call(self, request: Request, route: RouteConfig, outcome: Outcome) -> Reply:
        """Pass an MCP request on; an event stream in answer is read for notifications."""
        reply = await self._pass_through(request, route.name, outcome)
        if reply.stream is not None and is_event_stream(reply.stream.headers):
            on_event = self._call_events(route, reply.stream.status)
            reply.stream = EventRelay(reply.stream, reply.prefix, on_event)  # type: ignore[assignment]
        return reply

    async def _invalidate(self, route: RouteConfig, tags: tuple[str, ...], reason: str) -> None:
        """Drop the entries ``tags`` name, here and on every replica."""
        for tag in tags:
            self._metrics.mcp_invalidations.labels(route.name, reason).inc()
            await self._purger.purge(ByTag(tag))

    def _count_hit(
        self,
        route: RouteConfig,
        tier: str,
        entry: CachedResponse | None = None,
        form: Form = PLAIN,
    ) -> None:
        counter = self._hit_counters.get((route.name, tier))
        if counter is None:
            counter = self._metrics.cache_hits.labels(route.name, tier)
            self._hit_counters[route.name, tier] = counter
        self._tally.count(counter)
        if entry is not None:
            for kind, tokens in MODES[route.mode].saved_tokens(entry).items():
                self._metrics.llm_tokens_saved.labels(route.name, kind).inc(tokens)
        if form.stream:  # a hit's stream goes out whole, at once
            self._first_chunk_timer(route, "hit")()

    def _timer(self, route: str, result: str):
        timer = self._timers.get((route, result))
        if timer is None:
            timer = self._metrics.request_duration.labels(route, result)
            self._timers[(route, result)] = timer
        return timer


def _answer_hit(
    request: Request, route: RouteConfig, hit: Hit, outcome: Outcome, form: Form = PLAIN
) -> Reply:
    mode = MODES[route.mode]
    entry = mode.present(hit.entry, form)
    headers = replayed(entry.headers)
    headers[CACHE_STATUS] = outcome.cache_status
    headers["Age"] = str(int(entry.age(time.time())))
    if hit.similarity is not None:
        headers["Sidecache-Similarity"] = f"{hit.similarity:.4f}"
    if mode.answers_conditionals and http_cache.not_modified(request.headers, headers):
        return _not_modified(headers, outcome)
    if mode.answers_ranges and request.method == "GET" and entry.status == 200:
        return _answer_range(request, entry, headers, outcome)
    replays = entry if hit.similarity is None else None
    return Reply(entry.status, headers, outcome, body=entry.body, replays=replays)


def _answer_range(
    request: Request, entry: CachedResponse, headers: CIMultiDict[str], outcome: Outcome
) -> Reply:
    """A stored complete response answering a ``Range`` request: ``206`` with the one range
    asked for, else the whole ``200`` (RFC 9110 §14.2; see ``core.ranges``)."""
    length = len(entry.body)
    wanted = ranges.byte_range(combined(request.headers, "Range"), length)  # (2 lines: a list)
    if wanted is None or not ranges.if_range_allows(request.headers, headers):
        return Reply(entry.status, headers, outcome, body=entry.body)
    first, last = wanted
    headers["Content-Range"] = ranges.content_range(first, last, length)
    return Reply(206, headers, outcome, body=entry.body[first : last + 1])


def _answer_fetched(
    request: Request, route: RouteConfig, answer: Buffered | Streaming, joined: bool, fwd: str
) -> Reply:
    if isinstance(answer, Streaming):
        return _relay(answer.response, answer.prefix, streamed(fwd))
    UPSTREAM_SECONDS.set(answer.upstream_seconds)
    outcome = fetched(fwd, stored=answer.stored, collapsed=joined, revalidated=answer.revalidated)
    headers = replayed(answer.headers.items())
    headers[CACHE_STATUS] = outcome.cache_status
    if MODES[route.mode].answers_conditionals and http_cache.not_modified(request.headers, headers):
        return _not_modified(headers, outcome)
    return Reply(answer.status, headers, outcome, body=answer.body)


def _answer_call(
    mode: McpMode, call: mcp.Call, entry: CachedResponse, accept: str | None, outcome: Outcome
) -> Reply | None:
    """A stored MCP result answering ``call`` with its own id (``None``: the client accepts
    neither JSON nor an event stream)."""
    now = time.time()
    answer = mode.answer(call, entry, accept, now)
    if answer is None:
        return None
    fields, body = answer
    headers = CIMultiDict(fields)
    headers[CACHE_STATUS] = outcome.cache_status
    headers["Age"] = str(int(entry.age(now)))
    return Reply(200, headers, outcome, body=body)


def _refused_reply(refused: mcp.Refused) -> Reply:
    headers = CIMultiDict(
        {"Content-Type": "application/json", CACHE_STATUS: HEADER_MISMATCH.cache_status}
    )
    return Reply(400, headers, HEADER_MISMATCH, body=mcp.refusal(refused))


def _refused_by_request(step: Refuse) -> Reply:
    """``only-if-cached`` with nothing stored that may answer (RFC 9111 §5.2.1.7)."""
    body = {"error": "only_if_cached", "detail": "no stored answer satisfies the request"}
    headers = CIMultiDict(
        {"Content-Type": "application/json", CACHE_STATUS: step.outcome.cache_status}
    )
    return Reply(step.status, headers, step.outcome, body=json.dumps(body).encode())


def _not_modified(headers: CIMultiDict[str], outcome: Outcome) -> Reply:
    """A client's own conditional request, satisfied by what is stored (RFC 9110 §15.4.5)."""
    kept = CIMultiDict((k, v) for k, v in headers.items() if k.lower() in _NOT_MODIFIED_KEEPS)
    return Reply(304, kept, outcome)


#: The headers a 304 carries (RFC 9110 §15.4.5), plus Age and Cache-Status.
_NOT_MODIFIED_KEEPS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "age", "cache-status"}
)


def _answer_stale_on_error(route: RouteConfig, hit: Hit, why: str, form: Form) -> Reply:
    log.info("serving stale %s entry: upstream failed (%s)", hit.tier, why)
    entry = MODES[route.mode].present(hit.entry, form)
    outcome = stale_on_error(hit.tier)
    headers = replayed(entry.headers)
    headers[CACHE_STATUS] = outcome.cache_status
    headers["Age"] = str(int(entry.age(time.time())))
    return Reply(entry.status, headers, outcome, body=entry.body)


def _relay(upstream: Response, prefix: bytes, outcome: Outcome) -> Reply:
    """An upstream answer to relay as it arrives (the front end releases it when done)."""
    headers = end_to_end(upstream.headers)
    headers[CACHE_STATUS] = outcome.cache_status
    return Reply(upstream.status, headers, outcome, stream=upstream, prefix=prefix)


def _body_timeout_reply(seconds: float) -> Reply:
    body = {"error": "body_timeout", "detail": f"request body not received within {seconds:g}s"}
    headers = CIMultiDict(
        {"Content-Type": "application/json", CACHE_STATUS: BODY_TIMEOUT.cache_status}
    )
    return Reply(408, headers, BODY_TIMEOUT, body=json.dumps(body).encode(), close=True)


def _error_reply(exc: UpstreamError, outcome: Outcome) -> Reply:
    body = {"error": exc.reason, "detail": str(exc)}
    headers = CIMultiDict({"Content-Type": "application/json", CACHE_STATUS: outcome.cache_status})
    if exc.status == 503:
        headers["Retry-After"] = "1"
    return Reply(exc.status, headers, outcome, body=json.dumps(body).encode())
