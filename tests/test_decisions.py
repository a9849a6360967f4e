"""The decision core, rule by rule, with no socket: given what the lookup found and the
clock, what the engine does next."""

from __future__ import annotations

import math

import pytest
from multidict import CIMultiDict

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
from core.http_cache import NO_LIMITS, RequestLimits, request_limits
from core.modes import MODES
from core.policy import Decision

NOW = 1_000_000.0
ROUTE = RouteConfig(name="r", path="/r")
AHEAD = RouteConfig(name="r", path="/r", refresh_ahead=10.0)


def entry(age: float, ttl: float = 60, swr: float = 0, sie: float = 0, vary=()) -> CachedResponse:
    return CachedResponse(
        status=200,
        headers=(),
        body=b"{}",
        stored_at=NOW - age,
        ttl=ttl,
        stale_while_revalidate=swr,
        stale_if_error=sie,
        vary=vary,
    )


def hit(age: float, tier: str = "l1", **windows: float) -> Hit:
    return Hit(entry(age, **windows), tier)


@pytest.mark.parametrize(
    ("found", "method", "decision", "expected", "cache_status"),
    [
        # fresh: served from the tier that had it
        (hit(10), "POST", Decision.LOOKUP, Serve, "sidecache; hit; detail=l1"),
        (hit(10, "l2"), "GET", Decision.LOOKUP, Serve, "sidecache; hit; detail=l2"),
        (hit(10, "semantic"), "POST", Decision.LOOKUP, Serve, "sidecache; hit; detail=semantic"),
        # RFC 5861 §3: stale inside stale-while-revalidate is served, and refreshed
        (hit(65, swr=10), "POST", Decision.LOOKUP, Serve, "sidecache; hit; fwd=stale; detail=l1"),
        # past every window: fetched, as a revalidation of the stale entry
        (hit(75, swr=10), "POST", Decision.LOOKUP, Fetch, None),
        # nothing found: a miss; with request no-cache (no lookup made): fwd=request
        (None, "POST", Decision.LOOKUP, Fetch, None),
        (None, "POST", Decision.REFRESH, Fetch, None),
        # HEAD with nothing usable: passed on unstored
        (None, "HEAD", Decision.LOOKUP, Relay, "sidecache; fwd=miss"),
        (hit(75), "HEAD", Decision.LOOKUP, Relay, "sidecache; fwd=miss"),
    ],
    ids=[
        "fresh-l1",
        "fresh-l2",
        "fresh-semantic",
        "stale-while-revalidate",
        "stale-past-windows",
        "miss",
        "request-no-cache",
        "head-miss",
        "head-stale",
    ],
)
def test_after_lookup(found, method, decision, expected, cache_status):
    step = after_lookup(ROUTE, method, decision, found, NOW, chance=lambda: 0.0)

    assert isinstance(step, expected)
    if cache_status is not None:
        assert step.outcome.cache_status == cache_status


def test_stale_while_revalidate_always_refreshes_a_fresh_hit_only_when_due():
    stale = after_lookup(ROUTE, "GET", Decision.LOOKUP, hit(65, swr=10), NOW)
    fresh = after_lookup(ROUTE, "GET", Decision.LOOKUP, hit(10), NOW)

    assert isinstance(stale, Serve) and stale.refresh
    assert isinstance(fresh, Serve) and not fresh.refresh


@pytest.mark.parametrize(
    ("found", "decision", "fwd", "revalidates", "falls_back"),
    [
        (None, Decision.LOOKUP, "miss", False, False),
        (None, Decision.REFRESH, "request", False, False),
        (hit(75), Decision.LOOKUP, "stale", True, False),
        # RFC 5861 §4: inside stale-if-error the stale entry answers should the upstream fail
        (hit(75, sie=30), Decision.LOOKUP, "stale", True, True),
        (hit(95, sie=30), Decision.LOOKUP, "stale", True, False),
    ],
    ids=["miss", "no-cache", "stale", "stale-if-error", "past-stale-if-error"],
)
def test_a_fetch_says_why_what_it_revalidates_and_its_fallback(
    found, decision, fwd, revalidates, falls_back
):
    step = after_lookup(ROUTE, "POST", decision, found, NOW)

    assert isinstance(step, Fetch)
    assert step.fwd == fwd
    assert (step.revalidate is not None) == revalidates
    assert (step.fallback is not None) == falls_back


@pytest.mark.parametrize(
    ("route", "age", "chance", "due"),
    [
        (ROUTE, 59, 1.0, False),  # refresh_ahead off
        (AHEAD, 40, 1.0, False),  # 20 s left: before the window
        (AHEAD, 55, 0.6, True),  # 5 s left of a 10 s window: due when the draw beats 0.5
        (AHEAD, 55, 0.4, False),
        (AHEAD, 59.9, 0.02, True),  # nearly expired: almost certain
    ],
)
def test_refresh_ahead_chance_rises_to_one_at_expiry(route, age, chance, due):
    assert refresh_ahead_due(route, entry(age), NOW, lambda: chance) is due


@pytest.mark.parametrize(
    ("fallback", "status", "replaced"),
    [(hit(75, sie=30), 502, True), (hit(75, sie=30), 404, False), (None, 503, False)],
)
def test_a_5xx_answer_is_replaced_by_the_stale_if_error_fallback(fallback, status, replaced):
    assert fallback_instead(fallback, status) is replaced


@pytest.mark.parametrize(
    ("stored", "headers", "shared"),
    [
        (None, {}, False),  # not stored: each waiter asks for itself
        (entry(0), {"Accept-Encoding": "gzip"}, True),  # no Vary: anyone may have it
        (entry(0, vary=(("accept-encoding", "gzip"),)), {"Accept-Encoding": "gzip"}, True),
        (entry(0, vary=(("accept-encoding", "gzip"),)), {"Accept-Encoding": "br"}, False),
        (entry(0, vary=(("cookie", "u=1"),)), {}, False),
    ],
    ids=["unstored", "no-vary", "same-variant", "other-encoding", "other-cookie"],
)
def test_a_waiter_shares_only_a_stored_answer_of_its_own_variant(stored, headers, shared):
    """RFC 9111 §4.1: a stored response is selected only if its Vary'd headers match."""
    assert may_share(stored, CIMultiDict(headers)) is shared


HTTP = RouteConfig(name="r", path="/r", mode="http", method="GET")


def stored(cache_control: str | None) -> Hit:
    headers = (("Cache-Control", cache_control),) if cache_control else ()
    return Hit(
        CachedResponse(status=200, headers=headers, body=b"", stored_at=NOW - 75, ttl=60), "l1"
    )


@pytest.mark.parametrize(
    ("route", "found", "offline"),
    [
        pytest.param(HTTP, stored("max-age=60"), True, id="http-allowed"),
        pytest.param(HTTP, stored(None), True, id="http-nothing-said"),
        pytest.param(HTTP, stored("max-age=60, must-revalidate"), False, id="must-revalidate"),
        pytest.param(HTTP, stored("max-age=60, proxy-revalidate"), False, id="proxy-revalidate"),
        pytest.param(HTTP, stored("s-maxage=60"), False, id="s-maxage"),
        pytest.param(HTTP, stored("no-cache"), False, id="no-cache"),
        pytest.param(ROUTE, stored("max-age=60"), False, id="json-never"),
    ],
)
def test_a_stale_entry_answers_a_disconnected_upstream_only_where_allowed(route, found, offline):
    """RFC 9111 §4.2.4: a cache disconnected from the origin may serve stale unless
    ``must-revalidate``, ``proxy-revalidate``, ``s-maxage`` (§5.2.2.10) or ``no-cache``
    forbid it; a json route serves stale only inside its configured windows."""
    step = after_lookup(route, "GET", Decision.LOOKUP, found, NOW)

    assert isinstance(step, Fetch)
    assert step.fallback is None
    assert (step.offline is not None) == offline


# --- the request's own directives (RFC 9111 §5.2.1), http mode -------------------------------


def aged(age: float, cache_control: str | None = "max-age=60") -> Hit:
    """An entry fresh for 60 s, ``age`` seconds old."""
    headers = (("Cache-Control", cache_control),) if cache_control else ()
    return Hit(
        CachedResponse(status=200, headers=headers, body=b"", stored_at=NOW - age, ttl=60), "l1"
    )


def limits(value: str) -> RequestLimits:
    return request_limits(CIMultiDict({"Cache-Control": value}))


@pytest.mark.parametrize(
    ("request_cc", "found", "expected"),
    [
        pytest.param("", aged(30), "fresh", id="no-directives-fresh"),
        pytest.param("", aged(75), "fetch", id="no-directives-stale"),
        pytest.param("max-age=20", aged(30), "fetch", id="max-age-older-than-asked"),
        pytest.param("max-age=40", aged(30), "fresh", id="max-age-young-enough"),
        pytest.param("min-fresh=20", aged(30), "fresh", id="min-fresh-met"),
        pytest.param("min-fresh=40", aged(30), "fetch", id="min-fresh-not-met"),
        pytest.param("max-stale=20", aged(75), "stale", id="max-stale-covers"),
        pytest.param("max-stale=10", aged(75), "fetch", id="max-stale-too-short"),
        pytest.param("max-stale", aged(5000), "stale", id="max-stale-any"),
        pytest.param("max-stale=abc", aged(75), "fetch", id="max-stale-invalid-ignored"),
        pytest.param(
            "max-stale", aged(75, "max-age=60, must-revalidate"), "fetch", id="not-must-revalidate"
        ),
        pytest.param(
            "max-stale",
            aged(75, "max-age=60, proxy-revalidate"),
            "fetch",
            id="not-proxy-revalidate",
        ),
        pytest.param("max-stale", aged(75, "s-maxage=60"), "fetch", id="not-s-maxage"),
        pytest.param("max-stale", aged(75, "no-cache"), "fetch", id="not-no-cache"),
        pytest.param("only-if-cached", aged(30), "fresh", id="only-if-cached-fresh"),
        pytest.param("only-if-cached", aged(75), "504", id="only-if-cached-stale"),
        pytest.param("only-if-cached", None, "504", id="only-if-cached-nothing"),
        pytest.param(
            "only-if-cached, max-stale=30", aged(75), "stale", id="only-if-cached-max-stale"
        ),
    ],
)
def test_request_directives(request_cc, found, expected):
    """RFC 9111 §5.2.1: ``max-age`` (no older than), ``min-fresh`` (fresh for at least that
    much longer) and ``max-stale`` (stale by at most; no value: any) decide whether a
    stored response answers; ``max-stale`` never overrides ``must-revalidate``,
    ``proxy-revalidate``, ``s-maxage`` or ``no-cache`` (§4.2.4, §5.2.2.10);
    ``only-if-cached`` with nothing usable answers 504 (§5.2.1.7)."""
    step = after_lookup(HTTP, "GET", Decision.LOOKUP, found, NOW, limits=limits(request_cc))

    if expected == "504":
        assert isinstance(step, Refuse)
        assert (step.status, step.outcome.cache_status) == (
            504,
            "sidecache; detail=only-if-cached",
        )
    elif expected == "fetch":
        assert isinstance(step, Fetch)
    else:
        assert isinstance(step, Serve)
        assert step.outcome.label == ("hit" if expected == "fresh" else "stale")
        assert not step.refresh


def test_a_head_with_only_if_cached_and_nothing_stored_is_refused_too():
    step = after_lookup(HTTP, "HEAD", Decision.LOOKUP, None, NOW, limits=limits("only-if-cached"))
    assert isinstance(step, Refuse)


def test_a_json_route_reads_no_request_limits():
    """json mode keeps its own rules: only ``no-store`` / ``no-cache`` (``decide``)."""
    assert MODES["json"].request_limits(CIMultiDict({"Cache-Control": "max-stale"})) == NO_LIMITS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", NO_LIMITS, id="none"),
        pytest.param("max-age=5", RequestLimits(max_age=5.0), id="max-age"),
        pytest.param("max-age=x", RequestLimits(max_age=None), id="max-age-invalid"),
        pytest.param("min-fresh=7", RequestLimits(min_fresh=7.0), id="min-fresh"),
        pytest.param("max-stale=9", RequestLimits(max_stale=9.0), id="max-stale"),
        pytest.param("MAX-STALE", RequestLimits(max_stale=math.inf), id="max-stale-bare"),
        pytest.param('max-stale="9"', RequestLimits(max_stale=9.0), id="max-stale-quoted"),
        pytest.param("only-if-cached", RequestLimits(only_if_cached=True), id="only-if-cached"),
    ],
)
def test_request_limits(value, expected):
    """RFC 9111 §5.2.1: directive names are case-insensitive; arguments are delta-seconds
    (a quoted one accepted, §5.2); ``max-stale`` alone accepts any staleness."""
    assert limits(value) == expected
