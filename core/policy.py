"""Cacheability: may this request use the cache, may this response be stored."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from multidict import MultiMapping

from core.config import RouteConfig
from core.headers import combined


class Decision(enum.Enum):
    """What the cache may do for one request."""

    LOOKUP = "lookup"  # look up, and store a miss's answer
    REFRESH = "refresh"  # request said no-cache: skip the lookup, store the fresh answer
    BYPASS = "bypass"  # neither look up nor store


def cache_control(value: str | None) -> dict[str, str | None]:
    """``"max-age=60, no-cache"`` → ``{"max-age": "60", "no-cache": None}`` (names lowercased)."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in value.split(","):
        name, sep, arg = part.strip().partition("=")
        if name:
            directives[name.lower()] = arg.strip().strip('"') if sep else None
    return directives


#: delta-seconds at or above this are taken as this (RFC 9111 §1.2.2).
DELTA_CAP = 2**31


def delta_seconds(value: str | None) -> float | None:
    """A delta-seconds value (RFC 9111 §1.2.2): non-negative decimal digits, capped at
    ``DELTA_CAP``; ``None`` when absent or not digits."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None
    return float(min(int(value), DELTA_CAP)) if len(value) < 12 else float(DELTA_CAP)


def pragma_no_cache(headers: Mapping[str, str]) -> bool:
    """``Pragma: no-cache`` on any line or in any list position (RFC 9111 §5.4)."""
    pragma = combined(headers, "Pragma")
    return "no-cache" in {part.strip().lower() for part in pragma.split(",")}


def decide(route: RouteConfig, headers: Mapping[str, str], body_size: int | None) -> Decision:
    """Request-side rules: ``no-store`` and oversized bodies bypass, ``no-cache`` refreshes."""
    if body_size is None or body_size > route.max_body_size:
        return Decision.BYPASS
    directives = cache_control(combined(headers, "Cache-Control"))
    if "no-store" in directives:
        return Decision.BYPASS
    if "no-cache" in directives or pragma_no_cache(headers):
        return Decision.REFRESH
    return Decision.LOOKUP


def uncacheable_reason(
    route: RouteConfig,
    status: int,
    headers: Mapping[str, str],
    by_variant: bool = False,
    by_config: bool = True,
    streams: bool = False,
) -> str | None:
    """Why a response must not be stored (from its status and headers), or None if it may.
    ``by_config``: the route's ``statuses`` and ``Cache-Control`` decide (HTTP mode reads
    them by RFC 9111 instead, in ``core.http_cache``). ``streams``: an event stream may be
    (its mode records it and judges it once ended)."""
    if by_config and status not in route.statuses:
        return "status"
    if "Set-Cookie" in headers:
        return "set-cookie"
    directives = cache_control(combined(headers, "Cache-Control"))
    if by_config and ("no-store" in directives or "private" in directives):
        return "cache-control"
    if is_event_stream(headers) and not streams:
        return "stream"
    # (A shared route keys no tenant header: a Vary on one is not covered.)
    tenant = () if route.tenant.shared else route.tenant.headers
    covered = {h.lower() for h in (*route.vary, *tenant)}
    if by_variant:  # answers are stored per variant of their own Vary (HTTP mode)
        covered |= {name.strip().lower() for name in combined(headers, "Vary").split(",")}
    # An encoded body may only go to clients that accept it: cached only when keyed by it.
    # (Stored per variant, a coded answer's variant records Accept-Encoding: see
    # ``core.http_cache.variant_names``.)
    if content_coded(headers) and "accept-encoding" not in covered and not by_variant:
        return "content-encoding"
    # A Vary on a header the key does not cover could hand one client another's variant.
    for name in combined(headers, "Vary").split(","):
        name = name.strip().lower()
        if name and name not in covered:
            return "vary"
    return None


def content_coded(headers: Mapping[str, str]) -> bool:
    """Whether the body is in a content coding (any but ``identity``, on any line)."""
    encodings = {e.strip().lower() for e in combined(headers, "Content-Encoding").split(",")}
    return bool(encodings - {"", "identity"})


def is_event_stream(headers: Mapping[str, str]) -> bool:
    """An answer that never ends by design (media types are case-insensitive)."""
    return "text/event-stream" in headers.get("Content-Type", "").lower()


def surrogate_keys(headers: MultiMapping[str]) -> tuple[str, ...]:
    """Purge tags the upstream gave an answer: ``Surrogate-Key`` and ``Cache-Tag`` values,
    separated by spaces or commas."""
    tags: dict[str, None] = {}  # ordered and unique
    for name in ("Surrogate-Key", "Cache-Tag"):
        for value in headers.getall(name, ()):
            for tag in value.replace(",", " ").split():
                tags[tag] = None
    return tuple(tags)
