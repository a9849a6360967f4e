"""The ways a route caches: ``json`` (config-driven, keyed by the JSON body), ``http`` (a
shared HTTP cache by RFC 9111), ``mcp`` (an MCP endpoint, by MCP's own caching rules) and
``openai`` (OpenAI-compatible completions and embeddings, streamed or not). The engine asks
its route's mode what to do at each step of the flow and otherwise runs the same code for
all: every difference is a method or an attribute here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

from multidict import CIMultiDict, MultiMapping

from core import http_cache, llm, mcp, sse
from core.config import RouteConfig, TenantConfig
from core.entry import CachedResponse
from core.headers import combined, storable_headers
from core.keys import canonical_json, tenant_of
from core.policy import (
    Decision,
    cache_control,
    decide,
    delta_seconds,
    surrogate_keys,
    uncacheable_reason,
)
from core.sse import Event

#: Client conditionals are not forwarded on a cacheable route: sidecache fetches the whole
#: answer (so it can store and share it) and answers the condition itself.
CLIENT_CONDITIONALS = ("If-None-Match", "If-Modified-Since")


@dataclass(frozen=True, slots=True)
class Form:
    """What a request's body says about the answer it wants, where its mode reads it: the
    ``name`` of the answer's form (one stored answer may be given in several, e.g. an
    OpenAI completion as JSON or as an event stream; identical requests share an upstream
    call only within one form), and ``refused``: why the request may not use the cache."""

    name: str = ""
    refused: str | None = None
    stream: bool = False
    usage: bool = True


#: Any request of a mode that does not read bodies.
PLAIN = Form()


class JsonMode:
    """Fresh for the route's ``ttl``; stale windows from config or the upstream."""

    name = "json"
    #: Fresh L1 hits may be answered by the fast front end without the engine.
    fast_hits = True
    #: A client's own If-None-Match / If-Modified-Since is answered 304 from what is stored.
    answers_conditionals = False
    #: A stale entry with validators is revalidated with a conditional request.
    revalidates = False
    #: A ``Range`` request is answered from a stored complete response (``core.ranges``).
    answers_ranges = False
    #: A HEAD request is answered from the stored GET.
    head_from_get = False
    #: A successful unsafe request invalidates what is stored for its URI (RFC 9111 §4.4).
    invalidated_by_unsafe = False

    def handles(self, method: str) -> bool:
        """Whether a route of this mode with ``method: "*"`` takes requests of ``method``."""
        return True

    #: An event stream is recorded while it is relayed (shared live with identical requests)
    #: and stored once it ended complete (``proxy/streams.py``).
    records_streams = False

    def decide(
        self, route: RouteConfig, headers: Mapping[str, str], body_size: int | None
    ) -> Decision:
        return decide(route, headers, body_size)

    def keyed_request(
        self, method: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[str, bytes]:
        """The method and the bytes the key is derived from (besides the target, the
        route's ``vary`` headers, the meaning headers and the tenant, always keyed)."""
        return method, body

    def request_limits(self, headers: Mapping[str, str]) -> http_cache.RequestLimits:
        """What the request's own directives ask of a stored answer (json mode: nothing
        beyond ``no-store`` / ``no-cache``, which ``decide`` reads)."""
        return http_cache.NO_LIMITS

    def serves_stale_when_disconnected(self, route: RouteConfig, entry: CachedResponse) -> bool:
        """Whether a stored (stale, still kept) entry answers when the upstream cannot be
        reached, outside any stale-if-error window."""
        return False

    def request_form(self, route: RouteConfig, path: str, body: bytes) -> Form:
        """What the request's body asks for (read once it arrived)."""
        return PLAIN

    def unstorable_answer(
        self, route: RouteConfig, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        """Why an answer whose headers allow storing must not be stored for its body."""
        return None

    def unstorable_stream(self, events: list[Event], pending: bytes) -> str | None:
        """Why a recorded event stream is not a complete answer to store."""
        return "stream"

    def present(self, entry: CachedResponse, form: Form) -> CachedResponse:
        """A stored answer in the form the request asks for."""
        return entry

    def saved_tokens(self, entry: CachedResponse) -> dict[str, int]:
        """Model tokens a hit on ``entry`` saved, by kind."""
        return {}

    def unstorable_reason(
        self,
        route: RouteConfig,
        request_headers: Mapping[str, str],
        status: int,
        headers: Mapping[str, str],
    ) -> str | None:
        return uncacheable_reason(route, status, headers)

    def entry(
        self,
        route: RouteConfig,
        request_headers: Mapping[str, str],
        path_qs: str,
        status: int,
        headers: MultiMapping[str],
        body: bytes,
        times: tuple[float, float],
        tags: tuple[str, ...] = (),
    ) -> CachedResponse:
        """The entry to store (``tags``: the engine's own, such as the request's tag, after
        the upstream's surrogate keys)."""
        directives = cache_control(combined(headers, "Cache-Control"))
        return CachedResponse(
            status=status,
            headers=storable_headers(headers),
            body=body,
            stored_at=times[1],
            ttl=route.ttl,
            stale_while_revalidate=max(
                route.stale_while_revalidate, _seconds(directives, "stale-while-revalidate")
            ),
            stale_if_error=max(route.stale_if_error, _seconds(directives, "stale-if-error")),
            tags=(*surrogate_keys(headers), *tags),
            route=route.name,
        )


class HttpMode(JsonMode):
    """RFC 9111 shared cache (see ``core.http_cache``)."""

    name = "http"
    fast_hits = False
    answers_conditionals = True
    revalidates = True
    answers_ranges = True
    head_from_get = True
    invalidated_by_unsafe = True

    def handles(self, method: str) -> bool:
        # Only GET and HEAD are cached; every other method is passed through (and, when
        # unsafe and successful, invalidates: see ``core.http_cache.invalidates``).
        return method in ("GET", "HEAD")

    def decide(
        self, route: RouteConfig, headers: Mapping[str, str], body_size: int | None
    ) -> Decision:
        # A body is no part of an HTTP-mode key (a GET's content has no defined meaning,
        # RFC 9110 §9.3.1), yet it would be forwarded: such a request is not cached.
        if body_size != 0:
            return Decision.BYPASS
        return http_cache.request_decision(headers)

    def keyed_request(
        self, method: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[str, bytes]:
        return "GET", b""  # HEAD is answered from the stored GET; bodies are not keys

    def request_limits(self, headers: Mapping[str, str]) -> http_cache.RequestLimits:
        # max-age, min-fresh, max-stale, only-if-cached (RFC 9111 §5.2.1)
        return http_cache.request_limits(headers)

    def serves_stale_when_disconnected(self, route: RouteConfig, entry: CachedResponse) -> bool:
        # RFC 9111 §4.2.4: a disconnected cache may serve stale unless a directive forbids it.
        return http_cache.may_serve_stale(CIMultiDict(entry.headers), route.targeted)

    def unstorable_reason(
        self,
        route: RouteConfig,
        request_headers: Mapping[str, str],
        status: int,
        headers: Mapping[str, str],
    ) -> str | None:
        return uncacheable_reason(
            route, status, headers, by_variant=True, by_config=False
        ) or http_cache.unstorable_reason(request_headers, headers, status, route.targeted)

    def entry(
        self,
        route: RouteConfig,
        request_headers: Mapping[str, str],
        path_qs: str,
        status: int,
        headers: MultiMapping[str],
        body: bytes,
        times: tuple[float, float],
        tags: tuple[str, ...] = (),
    ) -> CachedResponse:
        """The JSON mode's entry, with RFC 9111 freshness (capped by ``max_ttl``), age,
        variants and URI tag; kept stale for ``keep`` (revalidation, or an answer while the
        upstream cannot be reached)."""
        base = super().entry(route, request_headers, path_qs, status, headers, body, times, tags)
        request_time, response_time = times
        fresh = http_cache.freshness(
            headers,
            route.max_ttl,
            request_time,
            response_time,
            status=status,
            targeted=route.targeted,
        )
        # must-revalidate, no-cache, s-maxage: never stale, whatever the route says.
        stale_allowed = fresh.stale_allowed
        return replace(
            base,
            stored_at=response_time - fresh.initial_age,
            ttl=min(fresh.lifetime, route.max_ttl),
            stale_while_revalidate=base.stale_while_revalidate if stale_allowed else 0.0,
            stale_if_error=base.stale_if_error if stale_allowed else 0.0,
            keep_stale=route.keep if stale_allowed or http_cache.validators(headers) else 0.0,
            tags=(*base.tags, http_cache.uri_tag(path_qs)),
            vary=http_cache.vary_values(http_cache.variant_names(headers), request_headers),
        )


class McpMode(JsonMode):
    """An MCP streamable-HTTP endpoint (``core.mcp``): one JSON-RPC call per POST, keyed by
    its method and result-affecting parameters, stored as its ``result`` alone for the
    ``ttlMs`` the server gave (capped by the route's ``max_ttl``), shared across tenants only when
    the server said ``cacheScope: public``, and answered with each requester's own ``id``."""

    name = "mcp"
    fast_hits = False  # every hit carries the requester's id: the engine renders it

    def policy(self, route: RouteConfig) -> mcp.Policy:
        settings = route.mcp
        return mcp.Policy(route.max_ttl, settings.legacy_ttl, settings.cache_tools, route.ttl)

    def classify(
        self, route: RouteConfig, headers: Mapping[str, str], body: bytes
    ) -> mcp.Call | mcp.Refused | None:
        return mcp.classify(headers, body, self.policy(route))

    def keyed(
        self, route: RouteConfig, call: mcp.Call, headers: Mapping[str, str]
    ) -> tuple[RouteConfig, dict[str, bytes]]:
        """The route keys are derived under (no tenant partition of its own: the scope is
        in the keyed body) and the keyed body of each scope the answer may be stored in,
        ``public`` first (looked up first). Only a 2026-07-28 cacheable method can be public.

        A public result is shared across authorization contexts (caching §"Security
        Considerations"), but not between a request that carries credentials and one that
        carries none: the service may refuse the anonymous one, so it gets its own."""
        private = tenant_of(headers, route.tenant)
        bodies = {}
        if call.modern and call.method in mcp.CACHEABLE:
            anonymous = private == tenant_of({}, route.tenant)
            audience = "anonymous" if anonymous else "credentialed"
            bodies[mcp.PUBLIC] = canonical_json(["public", audience, call.keyed.decode()])
        bodies[mcp.PRIVATE] = canonical_json(["private", private, call.keyed.decode()])
        return _unpartitioned(route), bodies

    def stored(
        self, route: RouteConfig, call: mcp.Call, status: int, message: object, now: float
    ) -> tuple[str, CachedResponse] | str:
        """The scope and entry to store from an upstream answer (the parsed JSON body, or
        the final response of an event stream), or why it is not stored."""
        verdict = mcp.judge(call, self.policy(route), status, message)
        if isinstance(verdict, str):
            return verdict
        entry = CachedResponse(
            status=200,
            headers=(("Content-Type", "application/json"),),
            body=verdict.result,
            stored_at=now,
            ttl=verdict.lifetime,
            tags=call.tags,
            route=route.name,
        )
        return verdict.scope, entry

    def answer(
        self, call: mcp.Call, entry: CachedResponse, accept: str | None, now: float
    ) -> tuple[dict[str, str], bytes] | None:
        """Headers and body answering ``call`` from ``entry``: JSON or a one-event stream,
        whichever the client accepts (``None``: neither)."""
        stream = mcp.wants_event_stream(accept)
        if stream is None:
            return None
        message = mcp.render(call.id, entry.body, entry.expires_at - now)
        if not stream:
            return {"Content-Type": "application/json"}, message
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        return headers, sse.encode(message.decode())


@lru_cache(maxsize=64)
def _unpartitioned(route: RouteConfig) -> RouteConfig:
    return replace(route, tenant=TenantConfig(shared=True))


class OpenAIMode(JsonMode):
    """OpenAI-compatible chat completions, completions and embeddings (``core.llm``): keyed
    by the body but for the fields that do not change the answer; deterministic requests
    only (unless the route says ``sampled``); complete answers only; one stored answer given
    as JSON or as an event stream, whichever the request asks for."""

    name = "openai"
    fast_hits = False  # a hit may need its other form
    records_streams = True

    def keyed_request(
        self, method: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[str, bytes]:
        return method, llm.key_body(body, headers)

    def request_form(self, route: RouteConfig, path: str, body: bytes) -> Form:
        asked = llm.parse_request(path, body, route.sampled)
        name = "stream" if asked.stream else "json"
        return Form(name, asked.refused, asked.stream, asked.usage)

    def unstorable_reason(
        self,
        route: RouteConfig,
        request_headers: Mapping[str, str],
        status: int,
        headers: Mapping[str, str],
    ) -> str | None:
        return uncacheable_reason(route, status, headers, streams=True)

    def unstorable_answer(
        self, route: RouteConfig, headers: Mapping[str, str], body: bytes
    ) -> str | None:
        return llm.unstorable_answer(headers.get("Content-Type", ""), body)

    def unstorable_stream(self, events: list[Event], pending: bytes) -> str | None:
        return llm.unstorable_stream(events, pending)

    def present(self, entry: CachedResponse, form: Form) -> CachedResponse:
        content_type = _content_type(entry)
        if form.stream == (llm.EVENT_STREAM in content_type.lower()):
            return entry
        if form.stream:
            body = llm.render_stream(json.loads(entry.body), form.usage)
            content_type = llm.EVENT_STREAM
        else:
            body = llm.as_json(llm.assemble(llm.read_events(entry.body)[0]))
            content_type = llm.JSON_TYPE
        headers = [(n, v) for n, v in entry.headers if n.lower() != "content-type"]
        return replace(entry, headers=(*headers, ("Content-Type", content_type)), body=body)

    def saved_tokens(self, entry: CachedResponse) -> dict[str, int]:
        return llm.usage(_content_type(entry), entry.body)


def _content_type(entry: CachedResponse) -> str:
    return next((v for n, v in entry.headers if n.lower() == "content-type"), "")


MODES: dict[str, JsonMode] = {
    "json": JsonMode(),
    "http": HttpMode(),
    "mcp": McpMode(),
    "openai": OpenAIMode(),
}


def _seconds(directives: dict[str, str | None], name: str) -> float:
    """A directive's delta-seconds (``inf``, ``1e400`` or ``-1`` are not: 0)."""
    return delta_seconds(directives.get(name)) or 0.0
