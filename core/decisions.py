"""The decision core: given what the cache tiers returned and the clock, what the engine
does next. No I/O here: each function is a rule that a table test can check row by row.

Together with the request-side rules (``core.policy.decide``, ``core.http_cache.request_
decision``), the storage rules (``core.modes``: ``unstorable_reason`` and ``entry``) and
``core.outcome``, these are every decision a request goes through; ``proxy/engine.py`` only
carries them out.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core import http_cache
from core.cache import Hit
from core.config import RouteConfig
from core.entry import CachedResponse
from core.modes import MODES
from core.outcome import (
    Outcome,
    fresh_hit,
    passed,
    stale_accepted,
    stale_hit,
    unanswered,
)
from core.policy import Decision


@dataclass(frozen=True, slots=True)
class Serve:
    """Answer from ``hit``; ``refresh``: also refresh the entry in the background."""

    hit: Hit
    outcome: Outcome
    refresh: bool = False


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask the upstream (one call per key at a time). ``revalidate``: a stored entry whose
    validators make the request conditional; ``fallback``: what to answer if the upstream
    fails (stale-if-error); ``offline``: what to answer only if the upstream cannot be
    reached at all (RFC 9111 §4.2.4, HTTP mode); ``fwd``: why the request goes forward
    (RFC 9211)."""

    fwd: str
    revalidate: CachedResponse | None = None
    fallback: Hit | None = None
    offline: Hit | None = None


@dataclass(frozen=True, slots=True)
class Relay:
    """Pass the request on as it is, unstored (a ``HEAD`` with nothing stored to answer it)."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` without the upstream: the request said ``only-if-cached`` and
    nothing stored may answer it (RFC 9111 §5.2.1.7: 504)."""

    status: int
    outcome: Outcome


Step = Serve | Fetch | Relay | Refuse


def after_lookup(
    route: RouteConfig,
    method: str,
    decision: Decision,
    hit: Hit | None,
    now: float,
    chance: Callable[[], float] = random.random,
    limits: http_cache.RequestLimits = http_cache.NO_LIMITS,
) -> Step:
    """What to do with what the lookup found (``hit`` ``None``: nothing, or no lookup).

    - fresh: serve it; inside the last ``refresh_ahead`` of its lifetime, also refresh it
      with a chance rising to 1 at expiry (so replicas spread their refreshes);
    - stale inside stale-while-revalidate (RFC 5861 §3): serve it and refresh it;
    - otherwise fetch, conditionally when the stale entry has validators (RFC 9111 §4.3.1),
      keeping it as the answer should the upstream fail inside stale-if-error (RFC 5861 §4)
      or, in HTTP mode, be unreachable where the entry's directives allow (RFC 9111 §4.2.4);
    - a ``HEAD`` with no usable entry is passed on unstored.

    HTTP mode also honours the request's own ``limits`` (RFC 9111 §5.2.1): ``max-age``
    and ``min-fresh`` narrow what counts as fresh, ``max-stale`` serves a stale entry whose
    directives allow it, and ``only-if-cached`` answers 504 rather than ask the upstream.
    """
    if hit is not None:
        accepted = _accepted(route, hit.entry, now, limits)
        if accepted == "fresh":
            refresh = refresh_ahead_due(route, hit.entry, now, chance)
            return Serve(hit, fresh_hit(hit.tier), refresh=refresh)
        if accepted == "stale":
            return Serve(hit, stale_accepted(hit.tier))
    if hit is not None and hit.entry.may_serve_while_revalidating(now) and _unnarrowed(limits):
        return Serve(hit, stale_hit(hit.tier), refresh=True)
    if limits.only_if_cached:
        return Refuse(504, unanswered("only-if-cached"))
    if method == "HEAD":
        return Relay(passed("miss", "miss"))
    if hit is not None:
        fallback = hit if hit.entry.may_serve_on_error(now) else None
        offline = None
        if fallback is None and MODES[route.mode].serves_stale_when_disconnected(route, hit.entry):
            offline = hit
        return Fetch("stale", revalidate=hit.entry, fallback=fallback, offline=offline)
    return Fetch("miss" if decision is Decision.LOOKUP else "request")


def _accepted(
    route: RouteConfig, entry: CachedResponse, now: float, limits: http_cache.RequestLimits
) -> str | None:
    """``"fresh"``, ``"stale"`` (the request's ``max-stale`` accepts it) or ``None``."""
    if limits == http_cache.NO_LIMITS:  # (json mode, and most requests: no directives)
        return "fresh" if entry.is_fresh(now) else None
    # (Whether the entry's directives allow stale at all: the same rule as when
    # disconnected, RFC 9111 §4.2.4.)
    stale_allowed = MODES[route.mode].serves_stale_when_disconnected(route, entry)
    return limits.accept(entry.age(now), entry.ttl, stale_allowed)


def _unnarrowed(limits: http_cache.RequestLimits) -> bool:
    """A stale-while-revalidate answer is for requests that did not ask for more
    freshness than usual (``max-age``, ``min-fresh``)."""
    return limits.max_age is None and limits.min_fresh == 0


def refresh_ahead_due(
    route: RouteConfig, entry: CachedResponse, now: float, chance: Callable[[], float]
) -> bool:
    """Probabilistic early refresh: inside the last ``refresh_ahead`` seconds of the TTL the
    chance rises linearly to 1."""
    window = route.refresh_ahead
    remaining = entry.expires_at - now
    return window > 0 and remaining < window and chance() > remaining / window


def fallback_instead(fallback: Hit | None, status: int) -> bool:
    """Whether an upstream answer with ``status`` is replaced by the stale ``fallback``: a
    5xx counts as an error for stale-if-error (RFC 5861 §4)."""
    return fallback is not None and status >= 500


def may_share(entry: CachedResponse | None, headers: Mapping[str, str]) -> bool:
    """Whether another request's upstream answer may be handed to this request: only what
    was stored (``entry``), and only a variant the cache would select for this request
    (RFC 9111 §4.1). The rule for stored entries, so coalescing never widens who sees an
    answer."""
    return entry is not None and http_cache.selects(entry.vary, headers)
