"""Cache keys: which requests are "the same request".

A key hashes the route name, method, the effective target (scheme, authority, raw path,
normalised query), the canonical body (JSON with sorted keys, compact separators and the
route's ``ignore_fields`` removed; raw bytes when the body is not JSON), every value of the
route's ``vary`` headers and of the headers that change a request's meaning
(``core.headers.MEANING``), and the tenant partition. Every part is length-prefixed, so no two
different requests share the bytes that get hashed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from core.config import RouteConfig, TenantConfig
from core.headers import MEANING, Target

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
    #: The request whatever authority it was sent to (and whatever ``MEANING`` headers it
    #: had): stored entries are tagged with it, so a purge by request reaches every copy.
    request_tag: str = ""


def derive_key(
    route: RouteConfig,
    method: str,
    target: Target,
    headers: Mapping[str, str],
    body: bytes,
    generation: int = 0,
) -> RequestKey:
    """The cache key of a request on ``route``. ``generation`` is the route's purge count:
    purging a route bumps it, and every older key becomes unreachable at once."""
    tenant = tenant_of(headers, route.tenant)
    what = [
        route.name,
        str(generation),
        method.upper(),
        target.path,
        normalise_query(target.query),
        *header_values(headers, route.vary),
        tenant,
    ]
    # Where it was sent and how its body is to be read: in the key, not in the request tag.
    where = [target.scheme, target.authority, *header_values(headers, MEANING)]
    document = _parse_json(body)
    canonical = _canonical_or_none(document, route.ignore_fields)
    if canonical is None:
        identity = _digest([*what, b"raw", body])
        return RequestKey(_digest([identity, *where]), tenant, request_tag=_tag(identity))
    identity = _digest([*what, b"json", canonical])
    key = RequestKey(_digest([identity, *where]), tenant, request_tag=_tag(identity))
    if route.semantic is None:
        return key
    text = _pop_path(document, route.semantic.field)
    if not isinstance(text, str) or not text.strip():
        return key
    scope = _digest([*what, *where, b"semantic", route.semantic.field, canonical_json(document)])
    return replace(key, semantic_text=text, semantic_scope=scope)


def _canonical_or_none(document: Any, ignore_fields: tuple[str, ...]) -> bytes | None:
    """The canonical bytes of a parsed body without its ignored fields; ``None`` when the
    body is to be keyed raw (not JSON, or JSON with text no UTF-8 can carry, such as a
    lone surrogate ``"\\ud800"``)."""
    if document is _MISSING:
        return None
    for name in ignore_fields:
        _pop_path(document, name)
    try:
        return canonical_json(document)
    except UnicodeEncodeError:
        return None


def _tag(identity: str) -> str:
    return f"request:{identity}"


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
        target: Target,
        headers: Mapping[str, str],
        body: bytes,
        generation: int = 0,
    ) -> RequestKey:
        if len(body) > self._max_body:
            return derive_key(route, method, target, headers, body, generation)
        names = (*route.vary, *MEANING, *route.tenant.headers)
        memo = (route.name, generation, method, target, *header_values(headers, names), body)
        key = self._memo.get(memo)
        if key is None:
            key = derive_key(route, method, target, headers, body, generation)
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[memo] = key
        return key


def canonical_json(document: Any) -> bytes:
    """One byte string per JSON value: key order and whitespace do not matter."""
    return _CANONICAL.encode(document).encode()


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


def tenant_of(headers: Mapping[str, str], tenant: TenantConfig) -> str:
    """The tenant partition of a request on a route with these ``tenant`` settings."""
    if tenant.shared:
        return "-"
    return tenant_partition(headers, tenant.headers, tenant.cookies)


def tenant_partition(
    headers: Mapping[str, str], names: tuple[str, ...], cookies: tuple[str, ...] = ()
) -> str:
    """A short hash of every value of the tenant-identifying headers (``Cookie`` narrowed
    to ``cookies`` when given); ``"-"`` when none is present."""
    values: list[str] = []
    for name in names:
        found = _all(headers, name)
        if cookies and name.lower() == "cookie":
            found = [f"{n}={v}" for line in found for n, v in _cookies(line) if n in cookies]
        values.append("\x00".join(found))
    if not any(values):
        return "-"
    return _digest(["tenant", *values])[:32]


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header: a repeated header counts whole, not just its first line."""
    getall = getattr(headers, "getall", None)  # (a multi-dict; cheaper than isinstance)
    if getall is not None:
        return getall(name, [])
    value = headers.get(name)
    return [] if value is None else [value]


def header_values(headers: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """Every value of each header; an absent header differs from an empty one."""
    return ["\x00".join(values) if (values := _all(headers, name)) else "\x01" for name in names]


def _cookies(line: str) -> list[tuple[str, str]]:
    pairs = (part.strip().partition("=") for part in line.split(";"))
    return [(name.strip(), value.strip()) for name, _, value in pairs if name.strip()]


def strict_json(body: bytes | str) -> Any:
    """A JSON document read the one way every parser agrees on. Raises ``ValueError`` for
    anything else: not JSON, a member named twice (parsers differ on which one counts), or
    ``NaN`` / ``Infinity`` (no canonical form). A request whose body the service might read
    differently from sidecache must not be keyed, nor classified, by its parsed form."""
    if isinstance(body, bytes):  # (as json.loads reads bytes)
        body = body.decode(json.detect_encoding(body), "surrogatepass")
    try:
        return _STRICT.decode(body)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _parse_json(body: bytes) -> Any:
    # An empty body is keyed as raw bytes: it must not share a key with the JSON ``null``.
    if not body:
        return _MISSING
    try:
        return strict_json(body)
    except ValueError:
        return _MISSING


def _reject_constant(name: str) -> Any:
    # NaN and Infinity parse but cannot be written back canonically: key such bodies raw.
    raise ValueError(f"{name} has no canonical JSON form")


def _reject_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"task": "a", "task": "b"}: Python keeps the last, other parsers the first, so the
    # service may answer a question the canonical form does not ask. Key such bodies raw.
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("an object names a member twice")
    return document


# (Made once: ``json.loads`` / ``json.dumps`` with options build a new one per call.)
_STRICT = json.JSONDecoder(
    parse_constant=_reject_constant, object_pairs_hook=_reject_duplicate_names
)
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


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
        # surrogateescape: header values that were not UTF-8 (aiohttp keeps their bytes so)
        raw = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        chunks += (len(raw).to_bytes(8, "big"), raw)
    return hashlib.blake2b(b"".join(chunks), digest_size=20).hexdigest()


def variant_key(key: str, vary: tuple[tuple[str, str], ...]) -> str:
    """The key of one variant of a response that has ``Vary`` (HTTP mode)."""
    return _digest([key, "variant", *(part for pair in vary for part in pair)])
