"""Cache keys: which requests are "the same request".

A key hashes the route name, method, path, normalised query, the canonical body (JSON with
sorted keys, compact separators and the route's ``ignore_fields`` removed; raw bytes when the
body is not JSON), the values of the route's ``vary`` headers and the tenant partition. Every
part is length-prefixed, so no two different requests share the bytes that get hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from core.config import RouteConfig

_MISSING = object()
_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))


@dataclass(frozen=True, slots=True)
class RequestKey:
    """What the cache needs to know about one request."""

    key: str
    tenant: str
    #: For semantic routes: the query text, and a hash of everything else that must match.
    semantic_text: str | None = None
    semantic_scope: str | None = None


def derive_key(
    route: RouteConfig,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    body: bytes,
    generation: int = 0,
) -> RequestKey:
    """The cache key of a request on ``route``. ``generation`` is the route's purge count:
    purging a route bumps it, and every older key becomes unreachable at once."""
    tenant = tenant_partition(headers, route.tenant.headers)
    vary = [headers.get(name, "") for name in route.vary]
    query = normalise_query(query_string)
    common = [route.name, str(generation), method.upper(), path, query, *vary, tenant]
    document = _parse_json(body)
    if document is _MISSING:
        return RequestKey(_digest([*common, b"raw", body]), tenant)
    for name in route.ignore_fields:
        _pop_path(document, name)
    key = _digest([*common, b"json", canonical_json(document)])
    if route.semantic is None:
        return RequestKey(key, tenant)
    text = _pop_path(document, route.semantic.field)
    if not isinstance(text, str) or not text.strip():
        return RequestKey(key, tenant)
    scope = _digest([*common, b"semantic", route.semantic.field, canonical_json(document)])
    return RequestKey(key, tenant, text, scope)


class KeyCache:
    """``derive_key`` remembered for repeated identical requests, the common case of a cache
    hit: the same bytes always give the same key, so the JSON work is done once. Only small
    bodies are remembered, and the memo is emptied when full, so it stays a few MiB."""

    def __init__(self, size: int = 4096, max_body: int = 2048) -> None:
        self._size = size
        self._max_body = max_body
        self._memo: dict[tuple[Any, ...], RequestKey] = {}

    def derive(
        self,
        route: RouteConfig,
        method: str,
        path: str,
        query_string: str,
        headers: Mapping[str, str],
        body: bytes,
        generation: int = 0,
    ) -> RequestKey:
        if len(body) > self._max_body:
            return derive_key(route, method, path, query_string, headers, body, generation)
        header_values = tuple(headers.get(name) for name in (*route.vary, *route.tenant.headers))
        memo = (route.name, generation, method, path, query_string, header_values, body)
        key = self._memo.get(memo)
        if key is None:
            key = derive_key(route, method, path, query_string, headers, body, generation)
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[memo] = key
        return key


def canonical_json(document: Any) -> bytes:
    """One byte string per JSON value: key order and whitespace do not matter."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def normalise_query(query_string: str) -> str:
    """Query parameters in a stable order (``b=2&a=1`` and ``a=1&b=2`` are one query).

    Only the order of different names is normalised: a repeated name keeps the order of its
    values, and escapes are compared as bytes, so ``q=caf%E9`` and ``q=caf%E8`` stay apart.
    """
    if not query_string:
        return ""
    # Literal non-ASCII becomes UTF-8 escapes; Latin-1 then maps each escaped byte to one
    # character, so no two byte strings decode to the same text (UTF-8 would turn both into
    # U+FFFD).
    escaped = quote(query_string, safe=_PRINTABLE_ASCII, errors="surrogateescape")
    pairs = parse_qsl(escaped, keep_blank_values=True, encoding="latin-1")
    return urlencode(sorted(pairs, key=lambda pair: pair[0]), encoding="latin-1")


def tenant_partition(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    """A short hash of the tenant-identifying headers; ``"-"`` when none is present."""
    values = [headers.get(name, "") for name in names]
    if not any(values):
        return "-"
    return _digest(["tenant", *values])[:32]


def _parse_json(body: bytes) -> Any:
    # An empty body is keyed as raw bytes: it must not share a key with the JSON ``null``.
    if not body:
        return _MISSING
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _MISSING


def _reject_constant(name: str) -> Any:
    # NaN and Infinity parse but cannot be written back canonically: key such bodies raw.
    raise ValueError(f"{name} has no canonical JSON form")


def _pop_path(document: Any, dotted: str) -> Any:
    """Remove ``a.b.c`` from nested objects and return its value (or None)."""
    *parents, last = dotted.removeprefix("$.").split(".")
    node = document
    for part in parents:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if isinstance(node, dict):
        return node.pop(last, None)
    return None


def _digest(parts: list[str | bytes]) -> str:
    chunks = []
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        chunks += (len(raw).to_bytes(8, "big"), raw)
    return hashlib.blake2b(b"".join(chunks), digest_size=20).hexdigest()


def variant_key(key: str, vary: tuple[tuple[str, str], ...]) -> str:
    """The key of one variant of a response that has ``Vary`` (HTTP mode)."""
    return _digest([key, "variant", *(part for pair in vary for part in pair)])
