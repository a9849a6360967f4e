"""MCP's own caching rules (revision 2026-07-28, ``server/utilities/caching``; the
``streamable-http`` transport's request headers), as pure functions.

A route in ``mode: mcp`` carries JSON-RPC: which answer may be reused for which request is
decided by the JSON-RPC method and its parameters, and by the hints the server puts in each
result (``ttlMs``, ``cacheScope``), not by HTTP caching headers. Everything here is a rule a
table test checks without a socket; the engine does what the answers say.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.keys import canonical_json, strict_json

#: The revision whose results carry cache hints and whose requests carry their own metadata.
MODERN = "2026-07-28"
#: Streamable-HTTP revisions with the ``initialize`` handshake and sessions, no cache hints.
#: (A request without ``MCP-Protocol-Version`` may be taken as 2025-03-26: transport spec.)
LEGACY = ("2025-03-26", "2025-06-18", "2025-11-25")
DEFAULT_LEGACY = "2025-03-26"

LIST_METHODS = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list"}
)
#: Results a cache may keep (caching §"Cacheable Results"); nothing else is, by default.
CACHEABLE = LIST_METHODS | {"server/discover", "resources/read"}
#: Methods whose ``Mcp-Name`` header mirrors ``params.name`` / ``params.uri``.
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: The only tool-call method: never cached unless the route allow-lists the tool.
TOOL_CALL = "tools/call"

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
#: ``_meta`` members that shape only this request's delivery (progress, logs, tracing,
#: who the client is), never the result: left out of the key. Any other ``_meta`` member
#: (``clientCapabilities`` among them) is part of it.
REQUEST_SCOPED_META = frozenset(
    {
        "progressToken",
        "io.modelcontextprotocol/clientInfo",
        "io.modelcontextprotocol/logLevel",
        "traceparent",
        "tracestate",
        "baggage",
        PROTOCOL_VERSION_META,
    }
)
#: Headers compared with the body instead of keyed; ``Mcp-Session-Id`` never keys an entry.
_CHECKED_HEADERS = frozenset({"mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id"})
#: Retries of a multi round-trip request depend on inputs outside the key (caching §"Cache Key").
MRTR_PARAMS = ("inputResponses", "requestState")

#: JSON-RPC error code for headers that disagree with the body (transport §"Server Validation").
HEADER_MISMATCH = -32020

#: Which cached results each server notification makes stale (caching §"Interaction with
#: Notifications"); ``notifications/resources/updated`` names its resource instead.
LIST_CHANGED = {
    "notifications/tools/list_changed": ("tools/list",),
    "notifications/prompts/list_changed": ("prompts/list",),
    "notifications/resources/list_changed": ("resources/list", "resources/templates/list"),
}
RESOURCE_UPDATED = "notifications/resources/updated"

PUBLIC = "public"
PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class Call:
    """One JSON-RPC request on an MCP route, classified.

    ``keyed``: canonical bytes of everything that identifies its result (method, the
    parameters that affect it, the protocol version, unchecked ``Mcp-*`` headers);
    ``uncacheable``: why its answer is never stored (``None``: it may be)."""

    method: str
    id: int | str
    version: str
    keyed: bytes
    name: str | None = None
    uncacheable: str | None = None
    #: A list page asked by ``cursor`` (not the first page).
    paged: bool = False

    @property
    def modern(self) -> bool:
        return self.version == MODERN

    @property
    def tags(self) -> tuple[str, ...]:
        """Tags of an entry stored for this call: what notifications and purges name."""
        tags = [method_tag(self.method)]
        if self.method == "resources/read" and self.name is not None:
            tags.append(resource_tag(self.name))
        return tuple(tags)


@dataclass(frozen=True, slots=True)
class Refused:
    """Headers and body disagree (or a required header is missing): answered ``400`` with a
    ``HeaderMismatch`` JSON-RPC error, never forwarded or cached."""

    reason: str
    id: int | str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The route's MCP settings the rules need (from ``RouteConfig``)."""

    max_ttl: float
    legacy_ttl: float = 0.0
    cache_tools: tuple[str, ...] = ()
    tool_ttl: float = 0.0


@dataclass(frozen=True, slots=True)
class Storable:
    """A result to keep: ``result`` is the ``result`` member's canonical bytes, fresh for
    ``lifetime`` seconds, shared across tenants only when ``scope`` is ``public``."""

    result: bytes
    lifetime: float
    scope: str


def classify(headers: Mapping[str, str], body: bytes, policy: Policy) -> Call | Refused | None:
    """What ``body`` (a POST to the MCP endpoint) asks. ``None``: not one JSON-RPC request
    (a notification, a response, a batch, not JSON): passed on as it is."""
    message = _parse(body)
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return None
    method, request_id = message.get("method"), message.get("id")
    if not isinstance(method, str) or not _is_id(request_id):
        return None
    params = message.get("params", {})
    if not isinstance(params, dict):
        return Call(method, request_id, "", b"", uncacheable="params not an object")
    version = _version(headers, params)
    if isinstance(version, Refused):
        return Refused(version.reason, request_id)
    mismatch = header_mismatch(headers, method, params, required=version == MODERN)
    if mismatch is not None:
        return Refused(mismatch, request_id)
    field = NAMED.get(method)
    name = params.get(field) if field is not None else None
    name = name if isinstance(name, str) else None
    keyed = canonical_json(
        {"m": method, "p": result_params(params), "v": version, "h": _unchecked(headers)}
    )
    why = uncacheable(method, name, version, params, policy)
    return Call(method, request_id, version, keyed, name, why, paged="cursor" in params)


def _parse(body: bytes) -> Any:
    try:
        return strict_json(body)  # (a member named twice: not classified, passed on)
    except ValueError:
        return None


def _is_id(value: Any) -> bool:
    # JSON-RPC ids are strings or numbers; only integers and strings are kept as sent.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _version(headers: Mapping[str, str], params: dict[str, Any]) -> str | Refused:
    """The request's protocol revision: the body's ``_meta`` one (modern requests carry
    it and the header must match), else the header, else 2025-03-26."""
    header = headers.get("MCP-Protocol-Version")
    meta = params.get("_meta")
    in_body = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    if in_body is not None:
        if header != in_body:
            return Refused(
                f"MCP-Protocol-Version header {header!r} does not match the body's {in_body!r}"
            )
        return str(in_body)
    if header == MODERN:
        return Refused(f"the body's _meta carries no {PROTOCOL_VERSION_META}")
    return header if header is not None else DEFAULT_LEGACY


def header_mismatch(
    headers: Mapping[str, str], method: str, params: dict[str, Any], required: bool
) -> str | None:
    """Why ``Mcp-Method`` / ``Mcp-Name`` disagree with the body (``None``: they agree).
    ``required``: the 2026-07-28 rule that they be present; in earlier revisions they are
    only checked when sent."""
    sent_method = headers.get("Mcp-Method")
    if sent_method is None:
        if required:
            return "Mcp-Method header missing"
    elif sent_method != method:
        return f"Mcp-Method header {sent_method!r} does not match body method {method!r}"
    field = NAMED.get(method)
    if field is None:
        return None
    sent_name = headers.get("Mcp-Name")
    if sent_name is None:
        return "Mcp-Name header missing" if required else None
    decoded = decode_header_value(sent_name)
    if decoded is None:
        return "Mcp-Name header is not valid Base64"
    if decoded != params.get(field):
        return f"Mcp-Name header does not match params.{field}"
    return None


def decode_header_value(value: str) -> str | None:
    """A mirrored header value, Base64 sentinel (``=?base64?…?=``) decoded; ``None`` when
    the sentinel holds no valid Base64 of UTF-8 text."""
    if not (value.startswith("=?base64?") and value.endswith("?=")) or len(value) < 11:
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def result_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that affect the result: all but the request-scoped ``_meta`` members."""
    kept = {k: v for k, v in params.items() if k != "_meta"}
    meta = params.get("_meta")
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in REQUEST_SCOPED_META}
        if rest:
            kept["_meta"] = rest
    return kept


def _unchecked(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """``Mcp-*`` headers (``Mcp-Param-*`` among them) not compared with the body: the
    server may act on them, so they are part of the key."""
    items = headers.items()
    return sorted(
        (k.lower(), v)
        for k, v in items
        if k.lower().startswith("mcp-") and k.lower() not in _CHECKED_HEADERS
    )


def uncacheable(
    method: str, name: str | None, version: str, params: dict[str, Any], policy: Policy
) -> str | None:
    """Why this request's answer is not stored, or ``None``."""
    if version != MODERN and version not in LEGACY:
        return f"protocol version {version!r} not known"
    if any(field in params for field in MRTR_PARAMS):
        return "multi round-trip retry"
    if method == TOOL_CALL:
        return None if name in policy.cache_tools else "tool not in cache_tools"
    if version == MODERN:
        return None if method in CACHEABLE else f"{method} not cacheable"
    if method in LIST_METHODS and policy.legacy_ttl > 0:
        return None
    return f"{method} not cached for {version}"


def judge(call: Call, policy: Policy, status: int, message: Any) -> Storable | str:
    """Whether an answer to ``call`` is stored, and how: the ``Storable`` or why not."""
    if call.uncacheable is not None:
        return call.uncacheable
    if status != 200:
        return f"status {status}"
    if not isinstance(message, dict) or "error" in message or "result" not in message:
        return "not a result"
    if not _same_id(message.get("id"), call.id):
        return "answers another id"
    result = message["result"]
    if not isinstance(result, dict):
        return "result not an object"
    if result.get("resultType", "complete") != "complete":
        return "interim result"  # input_required: MRTR, never cached
    if call.method == TOOL_CALL and result.get("isError") is True:
        return "tool error"
    lifetime = min(_lifetime(call, policy, result), policy.max_ttl)
    if lifetime <= 0:
        return "stale at once"
    return Storable(canonical_json(result), lifetime, scope_of(call, result))


def _lifetime(call: Call, policy: Policy, result: dict[str, Any]) -> float:
    if call.method == TOOL_CALL:
        return policy.tool_ttl
    if not call.modern:
        return policy.legacy_ttl
    return ttl_seconds(result.get("ttlMs"))


def ttl_seconds(ttl_ms: Any) -> float:
    """``ttlMs`` as seconds: absent, 0, negative or not an integer count as 0 (caching
    §"Time-to-Live (TTL) Field")."""
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms <= 0:
        return 0.0
    return ttl_ms / 1000


def scope_of(call: Call, result: dict[str, Any]) -> str:
    """``public`` only when a 2026-07-28 server says so for a method with cache hints;
    anything else (``private``, absent, ``""``, earlier revisions, an allow-listed tool)
    stays within the tenant."""
    if call.modern and call.method in CACHEABLE and result.get("cacheScope") == PUBLIC:
        return PUBLIC
    return PRIVATE


def _same_id(answered: Any, asked: int | str) -> bool:
    return type(answered) is type(asked) and answered == asked


def render(request_id: int | str, result: bytes, remaining: float | None = None) -> bytes:
    """A JSON-RPC response carrying a stored ``result`` for ``request_id`` (its JSON type
    kept). ``remaining``: the entry's freshness left, in seconds; a ``ttlMs`` in the result
    is lowered to it, so no client trusts a cached answer longer than the server allowed."""
    if remaining is not None:
        document = json.loads(result)
        if "ttlMs" in document:
            document["ttlMs"] = max(0, int(remaining * 1000))
            result = canonical_json(document)
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request_id).encode(), result)


def refusal(refused: Refused) -> bytes:
    """The ``400`` body for headers that disagree with the body."""
    error = {"code": HEADER_MISMATCH, "message": f"Header mismatch: {refused.reason}"}
    return canonical_json({"jsonrpc": "2.0", "id": refused.id, "error": error})


def wants_event_stream(accept: str | None) -> bool | None:
    """How to answer a hit: ``False`` JSON (preferred when both are accepted), ``True`` an
    event stream, ``None``: the client accepts neither (the upstream decides)."""
    accepted = _accepted(accept or "*/*")
    if accepted & {"application/json", "application/*", "*/*"}:
        return False
    if accepted & {"text/event-stream", "text/*"}:
        return True
    return None


def _accepted(accept: str) -> set[str]:
    types = set()
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        quality = next((p[2:] for p in parameters if p.lower().startswith("q=")), "1")
        try:
            if float(quality) <= 0:
                continue
        except ValueError:
            continue
        types.add(media.lower())
    return types


def invalidated_tags(message: Any) -> tuple[str, ...]:
    """The entry tags a server message makes stale: a list-changed notification names its
    lists, ``notifications/resources/updated`` its resource; anything else none."""
    if not isinstance(message, dict) or "id" in message:
        return ()
    method = message.get("method")
    if method in LIST_CHANGED:
        return tuple(method_tag(listed) for listed in LIST_CHANGED[method])
    if method == RESOURCE_UPDATED:
        params = message.get("params")
        uri = params.get("uri") if isinstance(params, dict) else None
        return (resource_tag(uri),) if isinstance(uri, str) else ()
    return ()


def invalid_cursor_tags(call: Call, message: Any) -> tuple[str, ...]:
    """An error answer to a list page asked by cursor: the cursor went invalid, so every
    stored page of that list is dropped (caching §"Interaction with Pagination")."""
    if call.method not in LIST_METHODS or not call.paged:
        return ()
    if isinstance(message, dict) and "error" in message:
        return (method_tag(call.method),)
    return ()


def final_response(message: Any, call: Call) -> bool:
    """Whether a message read from an event stream is the response to ``call`` (the
    stream's last event); notifications before it are not."""
    return (
        isinstance(message, dict)
        and "method" not in message
        and _same_id(message.get("id"), call.id)
    )


def parse_message(data: str) -> Any:
    """One event's data as a JSON-RPC message (``None``: not JSON)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def method_tag(method: str) -> str:
    """The tag of every entry stored for ``method`` (purge by method)."""
    return f"mcp:method:{method}"


def resource_tag(uri: str) -> str:
    """The tag of a stored ``resources/read`` of ``uri`` (purge by URI)."""
    return f"mcp:resource:{uri}"


def metric_method(method: str | None) -> str:
    """A low-cardinality label for the metrics: a known MCP method or ``other``."""
    known = CACHEABLE | {TOOL_CALL, "prompts/get", "initialize", "completion/complete"}
    return method if method in known else "other"
