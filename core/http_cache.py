"""RFC 9111 rules for routes in ``mode: http``: sidecache as a correct shared HTTP cache.

Pure functions over headers; the engine decides when to call them.

- Directives (§5.2): ``Cache-Control`` read as one list over all its lines (RFC 9110 §5.3),
  quoted strings kept whole, the first occurrence of a directive winning; a targeted field
  (``CDN-Cache-Control``, RFC 9213) that is present and valid replaces ``Cache-Control``.
- Storing (§3): not ``no-store`` / ``private``; a request with ``Authorization`` only
  when the response says ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5); never
  ``Vary: *``; never ``Set-Cookie`` (a shared cache must not hand one client's cookie to
  another). Any final status with explicit freshness is storable; without, only the
  heuristically cacheable ones (RFC 9110 §15.1); ``must-understand`` only for a status
  sidecache understands (§5.2.2.3). A content-coded body is stored as a variant of the
  request's ``Accept-Encoding``, whatever ``Vary`` says.
- Updating (§3.2, §4.3.4): a 304's fields replace the stored ones, except those that
  describe the stored content (``NOT_UPDATED_BY_304``).
- Freshness lifetime (§4.2.1): ``s-maxage``, else ``max-age``, else ``Expires - Date``,
  else, for a heuristically cacheable status only, 10 % of the time since
  ``Last-Modified`` (at most the cap the caller gives), else none: no default freshness.
  ``no-cache`` makes it 0.
- Age (§4.2.3): the age the response already had when it arrived (``Age`` plus the
  response delay, or ``now - Date``, whichever is larger) is kept by back-dating the
  entry, so ``Age`` and freshness keep counting from there. An ``Age`` that is not exactly
  one delta-seconds (a list included, §5.1) makes the response stale.
- Request directives (§5.2.1): ``no-store`` bypasses; ``no-cache`` and ``max-age=0``
  revalidate; ``max-age``, ``min-fresh`` and ``max-stale`` narrow or widen what a stored
  response may answer (``RequestLimits``); ``only-if-cached`` never asks the origin.
- Stale (§4.2.4): never against ``must-revalidate``, ``proxy-revalidate``, ``s-maxage``
  (§5.2.2.10) or ``no-cache``; otherwise when the origin allows it (RFC 5861) or, when
  disconnected, on the cache's own initiative.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from multidict import MultiMapping

from core.headers import combined
from core.policy import (
    Decision,
    cache_control,
    content_coded,
    delta_seconds,
    pragma_no_cache,
)

#: Safe methods (RFC 9110 §9.2.1); every other method, known or not, is unsafe and
#: invalidates what is stored for its target URI when it succeeds (§4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
HEURISTIC_FRACTION = 0.1
#: Statuses that may be given heuristic freshness (RFC 9110 §15.1).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Statuses whose caching semantics sidecache knows, for ``must-understand`` (§5.2.2.3).
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES | {302, 303, 307, 400, 403, 500, 502, 503, 504}
#: Directives that forbid serving the response stale, even when disconnected (§4.2.4).
NO_STALE = frozenset({"must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"})
#: The targeted field honoured by default (RFC 9213).
TARGETED_FIELDS = ("CDN-Cache-Control",)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a response stays fresh, how old it already was, what stale use is allowed."""

    lifetime: float
    initial_age: float
    stale_allowed: bool


def invalidates(method: str, status: int) -> bool:
    """Whether a request invalidates its target URI: an unsafe method with a non-error
    (2xx or 3xx) answer (§4.4)."""
    return method not in SAFE_METHODS and 200 <= status < 400


def directives(value: str) -> dict[str, str | None]:
    """A ``Cache-Control`` value as ``{name: argument}``: names lowercased, a quoted-string
    argument unquoted (commas inside it belong to it), the first occurrence of a directive
    kept (§4.2.1: a later ``max-age`` must not extend an earlier one)."""
    out: dict[str, str | None] = {}
    for part in _list_members(value):
        name, sep, arg = part.partition("=")
        name = name.strip().lower()
        if not name or name in out:
            continue
        arg = arg.strip()
        if sep and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = _QUOTED_PAIR.sub(r"\1", arg[1:-1])
        out[name] = arg if sep else None
    return out


def response_directives(
    headers: Mapping[str, str], targeted: tuple[str, ...] = TARGETED_FIELDS
) -> tuple[dict[str, str | None], bool]:
    """The directives that rule a stored response, and whether they came from a targeted
    field: the first of ``targeted`` that is present and valid replaces ``Cache-Control``
    and ``Expires`` (RFC 9213 §2.1)."""
    for name in targeted:
        value = combined(headers, name).strip()
        if value:
            found = directives(value)
            if found and all(_valid_directive(n, v) for n, v in found.items()):
                return found, True
    return directives(combined(headers, "Cache-Control")), False


def request_decision(headers: Mapping[str, str]) -> Decision:
    """Request directives: ``no-store`` bypasses; ``no-cache`` / ``max-age=0`` revalidate."""
    directives = cache_control(combined(headers, "Cache-Control"))
    if "no-store" in directives:
        return Decision.BYPASS
    if "no-cache" in directives or directives.get("max-age") == "0" or pragma_no_cache(headers):
        return Decision.REFRESH
    return Decision.LOOKUP


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What a request's own directives ask of a stored response (§5.2.1): no older than
    ``max_age``; fresh for at least ``min_fresh`` more seconds; or stale by at most
    ``max_stale`` (``inf``: any staleness); ``only_if_cached``: never the origin."""

    max_age: float | None = None
    min_fresh: float = 0.0
    max_stale: float = 0.0
    only_if_cached: bool = False

    def accept(self, age: float, lifetime: float, stale_allowed: bool) -> str | None:
        """How a stored response of ``age`` with freshness ``lifetime`` may answer without
        the origin: ``"fresh"``, ``"stale"`` (inside ``max_stale``; only where its own
        directives allow stale at all, §4.2.4: ``max-stale`` never overrides
        ``must-revalidate``, ``proxy-revalidate``, ``no-cache`` or ``s-maxage``), or
        ``None``."""
        if self.max_age is not None and age > self.max_age:
            return None
        remaining = lifetime - age
        if remaining > 0 and remaining >= self.min_fresh:
            return "fresh"
        if stale_allowed and self.max_stale > 0 and -remaining <= self.max_stale:
            return "stale"
        return None


#: A request without directives: fresh is usable, stale is not.
NO_LIMITS = RequestLimits()


def request_limits(headers: Mapping[str, str]) -> RequestLimits:
    """The request's ``max-age``, ``min-fresh``, ``max-stale`` and ``only-if-cached``
    (§5.2.1.1-3, §5.2.1.7). ``max-stale`` without a value accepts any staleness; an
    argument that is not delta-seconds is ignored (the directive asks nothing)."""
    found = directives(combined(headers, "Cache-Control"))
    if "max-stale" in found:
        max_stale = math.inf if found["max-stale"] is None else _delta(found, "max-stale")
    else:
        max_stale = 0.0
    max_age = delta_seconds(found["max-age"]) if "max-age" in found else None
    return RequestLimits(
        max_age=max_age,
        min_fresh=_delta(found, "min-fresh"),
        max_stale=max_stale,
        only_if_cached="only-if-cached" in found,
    )


def _delta(found: dict[str, str | None], name: str) -> float:
    return delta_seconds(found.get(name)) or 0.0


def unstorable_reason(
    request_headers: Mapping[str, str],
    response_headers: Mapping[str, str],
    status: int = 200,
    targeted: tuple[str, ...] = TARGETED_FIELDS,
) -> str | None:
    """Why a shared cache must not store this response, or None."""
    found, from_target = response_directives(response_headers, targeted)
    if "no-store" in cache_control(combined(request_headers, "Cache-Control")):
        return "request-no-store"
    if status < 200 or status in (206, 304):
        return "status"  # (partial content and 304s are not stored as such)
    understood = status in UNDERSTOOD_STATUSES
    if "must-understand" in found and not understood:
        return "must-understand"
    if "no-store" in found and not ("must-understand" in found and understood):
        return "no-store"
    if "private" in found:
        return "private"
    if "Set-Cookie" in response_headers:
        return "set-cookie"
    if "*" in vary_names(response_headers):
        return "vary-star"
    if "Authorization" in request_headers and not (
        {"public", "s-maxage", "must-revalidate"} & found.keys()
    ):
        return "authorization"
    explicit = {"public", "max-age", "s-maxage"} & found.keys() or (
        not from_target and "Expires" in response_headers
    )
    if not explicit and status not in HEURISTIC_STATUSES:
        return "status"
    return None


def freshness(
    headers: Mapping[str, str],
    heuristic_cap: float,
    request_time: float,
    response_time: float,
    *,
    status: int = 200,
    targeted: tuple[str, ...] = TARGETED_FIELDS,
) -> Freshness:
    """Lifetime and initial age of a response received at ``response_time``; the
    heuristic lifetime is at most ``heuristic_cap``."""
    found, from_target = response_directives(headers, targeted)
    date = parse_http_date(_single(headers, "Date")) or response_time
    stale_allowed = not (NO_STALE & found.keys())
    explicit = _explicit_lifetime(found)
    age = age_value(headers)
    if "no-cache" in found or age is None:
        lifetime = 0.0  # (an invalid Age: stale, §5.1)
    elif explicit is not None:
        lifetime = explicit
    elif not from_target and "Expires" in headers:
        expires = parse_http_date(_single(headers, "Expires"))
        lifetime = max(0.0, expires - date) if expires is not None else 0.0  # invalid = past
    elif status in HEURISTIC_STATUSES and (
        modified := parse_http_date(_single(headers, "Last-Modified"))
    ):
        lifetime = min(heuristic_cap, max(0.0, date - modified) * HEURISTIC_FRACTION)
    else:
        lifetime = 0.0  # no default freshness
    apparent_age = max(0.0, response_time - date)
    corrected_age = (age or 0.0) + (response_time - request_time)
    return Freshness(lifetime, max(apparent_age, corrected_age), stale_allowed)


def may_serve_stale(
    headers: Mapping[str, str], targeted: tuple[str, ...] = TARGETED_FIELDS
) -> bool:
    """Whether a stored response may be served stale at all (§4.2.4)."""
    return not (NO_STALE & response_directives(headers, targeted)[0].keys())


def age_value(headers: Mapping[str, str]) -> float | None:
    """The ``Age`` a response arrived with: 0 when absent; ``None`` (invalid: the response
    is stale) unless it is exactly one delta-seconds. §5.1 says a cache SHOULD use the
    first member of a list, but a list (on one line or several) means some hop added or
    repeated the field: which member is true cannot be known, and reading it as stale
    costs one revalidation where reading it as fresh could serve an old answer (the
    conservative reading the cache-tests suite also takes)."""
    value = combined(headers, "Age")
    if not value.strip():
        return 0.0
    return None if "," in value else delta_seconds(value)


def vary_names(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The request headers a response varies on, lowercased and sorted."""
    names = {name.strip().lower() for name in combined(headers, "Vary").split(",")}
    return tuple(sorted(name for name in names if name))


def variant_names(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The request headers a stored response is selected by (§4.1): those its ``Vary``
    names and, for a content-coded body, ``Accept-Encoding`` even when ``Vary`` does not
    say so: a coded body then only reaches a client that asked exactly as its first
    requester did, whether or not the origin declared that it varies."""
    names = vary_names(headers)
    if content_coded(headers) and "accept-encoding" not in names:
        names = tuple(sorted((*names, "accept-encoding")))
    return names


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
    if "If-None-Match" in request_headers:
        etag = stored.get("ETag")
        if etag is None:
            return False
        tags = {_weak_compare(t) for t in combined(request_headers, "If-None-Match").split(",")}
        return "*" in tags or _weak_compare(etag) in tags
    since = parse_http_date(request_headers.get("If-Modified-Since"))
    modified = parse_http_date(stored.get("Last-Modified"))
    return since is not None and modified is not None and modified <= since


#: Stored fields a 304 never replaces: they describe the stored content itself, which a 304
#: cannot change. ``Content-Length`` (§3.2, by name); ``Content-Encoding`` and ``Content-MD5``,
#: fields "the cache's stored response depends upon" (§3.2: the stored bytes are in the stored
#: coding, with the stored digest); ``Content-Range``, which §3.2 lets a cache exclude; and
#: ``ETag``, the validator that identified the stored response to update (§4.3.4).
NOT_UPDATED_BY_304 = frozenset(
    {"content-length", "content-encoding", "content-md5", "content-range", "etag"}
)


def merge_not_modified(
    stored: tuple[tuple[str, str], ...], fresh: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """Stored headers updated with those of a 304 (§3.2, §4.3.4): the 304's values replace
    the stored ones of the same name, except ``NOT_UPDATED_BY_304``."""
    replaced = {name.lower() for name in fresh if name.lower() not in NOT_UPDATED_BY_304}
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


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAYS = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
#: The three HTTP-date forms (RFC 9110 §5.6.7), exactly: IMF-fixdate, RFC 850, asctime.
_IMF = re.compile(rf"{_DAYS}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
_RFC850 = re.compile(rf"{_LONG_DAYS}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
_ASCTIME = re.compile(rf"{_DAYS} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date in one of its three forms (RFC 9110 §5.6.7), case-sensitive as the
    grammar is; anything else (two-digit years outside RFC 850, dashes, periods, extra
    spaces, a one-digit hour, another zone) is invalid: ``None``."""
    if not value:
        return None
    value = value.strip()
    if match := _IMF.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        year = _rfc850_year(int(short_year))
    elif match := _ASCTIME.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    try:
        moment = datetime(
            int(year), _MONTHS.index(month.lower()) + 1, int(day),
            int(hour), int(minute), int(second), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:  # Feb 30, hour 25, ...
        return None
    return moment.timestamp()


def _rfc850_year(short: int) -> str:
    """A two-digit year more than 50 years in the future is in the past (§5.6.7)."""
    this_year = datetime.now(UTC).year
    year = this_year - this_year % 100 + short
    return str(year - 100 if year > this_year + 50 else year)


def _single(headers: Mapping[str, str], name: str) -> str | None:
    """A singleton field's value; several lines of it are invalid (``None``)."""
    if isinstance(headers, MultiMapping):
        values = headers.getall(name, ())
        return values[0] if len(values) == 1 else None
    return headers.get(name)


def _list_members(value: str) -> list[str]:
    """The members of a comma-separated list, commas inside quoted strings kept."""
    members, current, quoted, escaped = [], [], False, False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            members.append("".join(current))
            current = []
            continue
        current.append(char)
    members.append("".join(current))
    return [m.strip() for m in members if m.strip()]


def _valid_directive(name: str, value: str | None) -> bool:
    """A targeted field is ignored when it does not parse (RFC 9213 §2.1); a lifetime
    directive's argument must be delta-seconds."""
    if not _TOKEN.fullmatch(name):
        return False
    return name not in ("max-age", "s-maxage") or delta_seconds(value) is not None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_QUOTED_PAIR = re.compile(r"\\(.)")


def _weak_compare(tag: str) -> str:
    return tag.strip().removeprefix("W/")
