"""RFC 9111 rules for routes in ``mode: http``: sidecache as a correct shared HTTP cache.

Pure functions over headers; the handler decides when to call them.

- Storing (9111 §3): not ``no-store`` / ``private``; a request with ``Authorization`` only
  when the response says ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5); never
  ``Vary: *``; never ``Set-Cookie`` (a shared cache must not hand one client's cookie to
  another).
- Freshness lifetime (§4.2.1): ``s-maxage``, else ``max-age``, else ``Expires - Date``,
  else a heuristic: 10 % of the time since ``Last-Modified``, at most the route's ``ttl``
  (and the route's ``ttl`` when there is nothing to go on). ``no-cache`` makes it 0.
- Age (§4.2.3): the age the response already had when it arrived (``Age`` plus the
  response delay, or ``now - Date``, whichever is larger) is kept by back-dating the
  entry, so ``Age`` and freshness keep counting from there.
- ``must-revalidate`` / ``proxy-revalidate``: a stale entry is never served, not even on
  error (§4.2.4).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

from core.headers import combined
from core.policy import Decision, cache_control, delta_seconds, pragma_no_cache

#: Unsafe methods invalidate what is stored for their target URI (§4.4).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HEURISTIC_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a response stays fresh, how old it already was, what stale use is allowed."""

    lifetime: float
    initial_age: float
    stale_allowed: bool


def request_decision(headers: Mapping[str, str]) -> Decision:
    """Request directives: ``no-store`` bypasses; ``no-cache`` / ``max-age=0`` revalidate."""
    directives = cache_control(combined(headers, "Cache-Control"))
    if "no-store" in directives:
        return Decision.BYPASS
    if "no-cache" in directives or directives.get("max-age") == "0" or pragma_no_cache(headers):
        return Decision.REFRESH
    return Decision.LOOKUP


def unstorable_reason(
    request_headers: Mapping[str, str], response_headers: Mapping[str, str]
) -> str | None:
    """Why a shared cache must not store this response, or None."""
    directives = cache_control(combined(response_headers, "Cache-Control"))
    if "no-store" in cache_control(combined(request_headers, "Cache-Control")):
        return "request-no-store"
    if "no-store" in directives:
        return "no-store"
    if "private" in directives:
        return "private"
    if "Set-Cookie" in response_headers:
        return "set-cookie"
    if "*" in vary_names(response_headers):
        return "vary-star"
    if "Authorization" in request_headers and not (
        {"public", "s-maxage", "must-revalidate"} & directives.keys()
    ):
        return "authorization"
    return None


def freshness(
    headers: Mapping[str, str], default_ttl: float, request_time: float, response_time: float
) -> Freshness:
    """Lifetime and initial age of a response received at ``response_time``."""
    directives = cache_control(combined(headers, "Cache-Control"))
    date = _http_date(headers.get("Date")) or response_time
    stale_allowed = not ({"must-revalidate", "proxy-revalidate"} & directives.keys())
    explicit = _explicit_lifetime(directives)
    if "no-cache" in directives:
        lifetime = 0.0
    elif explicit is not None:
        lifetime = explicit
    elif "Expires" in headers:
        expires = _http_date(headers.get("Expires"))
        lifetime = max(0.0, expires - date) if expires is not None else 0.0  # invalid = past
    elif (modified := _http_date(headers.get("Last-Modified"))) is not None:
        lifetime = min(default_ttl, max(0.0, date - modified) * HEURISTIC_FRACTION)
    else:
        lifetime = default_ttl
    apparent_age = max(0.0, response_time - date)
    corrected_age = (delta_seconds(headers.get("Age")) or 0.0) + (response_time - request_time)
    return Freshness(lifetime, max(apparent_age, corrected_age), stale_allowed)


def vary_names(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The request headers a response varies on, lowercased and sorted."""
    names = {name.strip().lower() for name in combined(headers, "Vary").split(",")}
    return tuple(sorted(name for name in names if name))


#: The value a variant records for a header the request did not send: an absent header
#: is not an empty one (no ``Accept-Encoding`` accepts any coding, an empty one none).
ABSENT = "\x00"


def vary_values(names: tuple[str, ...], request_headers: Mapping[str, str]) -> tuple:
    """The request's values for ``names``: what a stored variant must match (§4.1)."""
    return tuple(
        (name, " ".join(combined(request_headers, name).split()))
        if name in request_headers
        else (name, ABSENT)
        for name in names
    )


def selects(vary: tuple[tuple[str, str], ...], request_headers: Mapping[str, str]) -> bool:
    """Whether a variant stored for the request header values ``vary`` may answer a request
    with ``request_headers``: the same value for every header it varies on (§4.1)."""
    names = tuple(name for name, _ in vary)
    return vary == vary_values(names, request_headers)


def validators(headers: Mapping[str, str]) -> dict[str, str]:
    """Conditional request headers that revalidate a stored response (§4.3.1)."""
    out = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "etag":
            out["If-None-Match"] = value
        elif lowered == "last-modified":
            out["If-Modified-Since"] = value
    return out


def not_modified(request_headers: Mapping[str, str], stored: Mapping[str, str]) -> bool:
    """Whether a client's own conditional request is satisfied by the stored response, so
    it can be answered 304 (§4.3.2: If-None-Match wins over If-Modified-Since)."""
    if_none_match = request_headers.get("If-None-Match")
    if if_none_match is not None:
        etag = stored.get("ETag")
        if etag is None:
            return False
        tags = {_weak_compare(t) for t in if_none_match.split(",")}
        return "*" in tags or _weak_compare(etag) in tags
    since = _http_date(request_headers.get("If-Modified-Since"))
    modified = _http_date(stored.get("Last-Modified"))
    return since is not None and modified is not None and modified <= since


def merge_not_modified(
    stored: tuple[tuple[str, str], ...], fresh: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """Stored headers updated with those of a 304 (§4.3.4): the 304's values replace the
    stored ones of the same name."""
    replaced = {name.lower() for name in fresh if name.lower() != "content-length"}
    kept = [(name, value) for name, value in stored if name.lower() not in replaced]
    updates = [(name, value) for name, value in fresh.items() if name.lower() in replaced]
    return tuple(kept + updates)


def invalidated_uris(path_qs: str, response_headers: Mapping[str, str]) -> list[str]:
    """What an unsafe request invalidates (§4.4): its target URI, and the same-origin
    ``Location`` / ``Content-Location`` (given as paths)."""
    uris = [path_qs]
    for name in ("Location", "Content-Location"):
        value = response_headers.get(name, "")
        if value.startswith("/") and not value.startswith("//"):
            uris.append(value)
    return uris


def uri_tag(path_qs: str) -> str:
    """The purge tag every stored response for one URI carries."""
    return f"uri:{path_qs}"


def _explicit_lifetime(directives: dict[str, str | None]) -> float | None:
    """``s-maxage``, else ``max-age`` (RFC 9111 §4.2.1); one that is present but invalid
    (``-5``, ``1.5``, empty) makes the response stale, as §4.2.1 encourages."""
    for name in ("s-maxage", "max-age"):
        if name in directives:
            value = delta_seconds(directives[name])
            return 0.0 if value is None else value
    return None


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def _weak_compare(tag: str) -> str:
    return tag.strip().removeprefix("W/")
