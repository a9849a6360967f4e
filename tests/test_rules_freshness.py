"""Freshness rules as tables, with no socket and an explicit clock: how long a response stays
fresh, how old it already is, when it may be served stale, how it is revalidated, and when a
client's own conditional request is answered 304. One row per rule; ids name the rule."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import pytest

from core.config import RouteConfig
from core.http_cache import age_value, freshness, merge_not_modified, not_modified, validators
from core.modes import MODES
from tests.rules import h

NOW = 1_700_000_000.0  # every clock below is an offset from this
TTL = 300.0  # the heuristic's cap (a route's max_ttl)
HUGE = "9" * 400  # a delta-seconds too large for a float
DELTA_CAP = 2**31  # RFC 9111 §1.2.2


def date(offset: float = 0.0) -> str:
    """The IMF-fixdate ``offset`` seconds from NOW (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(NOW + offset, usegmt=True)


def asctime_date(offset: float = 0.0) -> str:
    """The same instant in ANSI C's asctime() format, which recipients MUST accept."""
    d = datetime.fromtimestamp(NOW + offset, UTC)
    return f"{d:%a %b} {d.day:2d} {d:%H:%M:%S %Y}"


def rfc850_date(offset: float = 0.0) -> str:
    """The same instant in the obsolete RFC 850 format, which recipients MUST accept."""
    return f"{datetime.fromtimestamp(NOW + offset, UTC):%A, %d-%b-%y %H:%M:%S} GMT"


# --- freshness lifetime (RFC 9111 §4.2.1, §4.2.2) --------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h("Cache-Control: max-age=60"), 60.0, id="max-age"),  # §5.2.2.1
        pytest.param(h("Cache-Control: s-maxage=30, max-age=60"), 30.0, id="s-maxage-over-max-age"),
        pytest.param(h("Cache-Control: s-maxage=0, max-age=60"), 0.0, id="s-maxage-zero"),
        pytest.param(h("Cache-Control: max-age=60, no-cache"), 0.0, id="no-cache-over-max-age"),
        pytest.param(
            h("Cache-Control: no-cache", f"Date: {date()}", f"Expires: {date(60)}"),
            0.0,
            id="no-cache-over-expires",
        ),
        pytest.param(
            h("Cache-Control: public", "Cache-Control: max-age=60"),
            60.0,
            id="max-age-on-second-line",
        ),
        pytest.param(h("Cache-Control: MAX-AGE=60"), 60.0, id="directive-any-case"),
        pytest.param(h('Cache-Control: max-age="60"'), 60.0, id="quoted-max-age"),
        pytest.param(h("Cache-Control: max-age=-5"), 0.0, id="negative-max-age-is-stale"),
        pytest.param(
            h("Cache-Control: max-age=1.5"),
            0.0,
            id="invalid-max-age-is-stale",
        ),
        pytest.param(
            h("Cache-Control: max-age=0", "Cache-Control: max-age=3600"),
            0.0,
            id="repeated-max-age-first-or-stale",
        ),
        pytest.param(
            h("Cache-Control: max-age=99999999999999999999"),
            float(DELTA_CAP),
            id="max-age-capped",
        ),
        pytest.param(
            h(f"Cache-Control: max-age={HUGE}"),
            float(DELTA_CAP),
            id="max-age-too-large-for-a-float",
        ),
        # §5.3: with max-age, Expires is ignored
        pytest.param(
            h("Cache-Control: max-age=10", f"Date: {date()}", f"Expires: {date(60)}"),
            10.0,
            id="max-age-over-expires",
        ),
        pytest.param(h(f"Date: {date()}", f"Expires: {date(60)}"), 60.0, id="expires-minus-date"),
        pytest.param(
            h(f"Date: {date(-30)}", f"Expires: {date(60)}"), 90.0, id="expires-from-origin-date"
        ),
        pytest.param(h(f"Expires: {date(60)}"), 60.0, id="expires-without-date-uses-receipt"),
        pytest.param(h(f"Date: {date()}", f"Expires: {date(-60)}"), 0.0, id="expires-in-the-past"),
        pytest.param(h(f"Date: {date()}", "Expires: 0"), 0.0, id="invalid-expires-is-past"),  # §5.3
        pytest.param(h("Expires:"), 0.0, id="empty-expires-is-past"),
        pytest.param(
            h(f"Date: {date()}", f"Expires: {rfc850_date(60)}"), 60.0, id="expires-rfc850-date"
        ),
        pytest.param(
            h(f"Date: {date()}", f"Expires: {asctime_date(60)}"),
            60.0,
            id="expires-asctime-date",
        ),
        # §4.2.2: heuristic, 10 % of the time since Last-Modified, at most the route ttl
        pytest.param(
            h(f"Date: {date()}", f"Last-Modified: {date(-1000)}"), 100.0, id="heuristic-tenth"
        ),
        pytest.param(
            h(f"Date: {date()}", f"Last-Modified: {date(-100_000)}"), TTL, id="heuristic-capped"
        ),
        pytest.param(
            h(f"Date: {date()}", f"Last-Modified: {date(60)}"), 0.0, id="heuristic-future-modified"
        ),
        pytest.param(h("Last-Modified: garbage"), 0.0, id="invalid-last-modified-is-absent"),
        # no default freshness: nothing to go on is not fresh
        pytest.param(h(), 0.0, id="nothing-to-go-on-not-fresh"),
    ],
)
def test_freshness_lifetime(headers, expected):
    """RFC 9111 §4.2.1: ``s-maxage``, else ``max-age``, else ``Expires - Date``; ``no-cache``
    makes it 0 (the most restrictive directive wins); §4.2.2: else 10 % of the time since
    ``Last-Modified``, at most the cap; with nothing to go on, not fresh (no default)."""
    assert freshness(headers, TTL, NOW, NOW).lifetime == expected


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        pytest.param(404, h(f"Date: {date()}", f"Last-Modified: {date(-1000)}"), 100.0, id="404"),
        pytest.param(301, h(f"Date: {date()}", f"Last-Modified: {date(-1000)}"), 100.0, id="301"),
        pytest.param(302, h(f"Date: {date()}", f"Last-Modified: {date(-1000)}"), 0.0, id="302"),
        pytest.param(500, h(f"Date: {date()}", f"Last-Modified: {date(-1000)}"), 0.0, id="500"),
        pytest.param(500, h("Cache-Control: max-age=60"), 60.0, id="500-explicit"),
    ],
)
def test_heuristic_freshness_only_for_heuristically_cacheable_statuses(status, headers, expected):
    """RFC 9111 §4.2.2: heuristic freshness only for a status defined as heuristically
    cacheable (RFC 9110 §15.1); explicit freshness counts for any status."""
    assert freshness(headers, TTL, NOW, NOW, status=status).lifetime == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h("Age: 10"), 10.0, id="valid"),
        pytest.param(h(), 0.0, id="absent"),
        pytest.param(h("Age:  10 "), 10.0, id="whitespace-around"),
        pytest.param(h("Age: 0,7200"), None, id="list"),
        pytest.param(h("Age: 0, 0"), None, id="list-of-equal-members"),
        pytest.param(h("Age: 7200", "Age: 0"), None, id="two-lines"),
        pytest.param(h("Age: 0", "Age: 0"), None, id="two-equal-lines"),
        pytest.param(h("Age: abc"), None, id="not-a-number"),
        pytest.param(h("Age: -7200"), None, id="negative"),
        pytest.param(h("Age: 7200.0"), None, id="float"),
        pytest.param(h("Age: 7200;foo=bar"), None, id="parameter"),
    ],
)
def test_age_value(headers, expected):
    """RFC 9111 §5.1: ``Age`` is delta-seconds; an invalid one (``None``) makes the
    response stale. A list (one line or several) is taken as invalid: §5.1's "SHOULD use
    the first member" is set aside for the conservative reading (one revalidation, never
    an old answer served as fresh), as the cache-tests suite expects."""
    assert age_value(headers) == expected


def test_an_invalid_age_makes_a_response_stale():
    """RFC 9111 §5.1 / §4.2.3: an age that cannot be read is not taken as 0."""
    assert freshness(h("Cache-Control: max-age=3600", "Age: abc"), TTL, NOW, NOW).lifetime == 0.0


# --- age (RFC 9111 §4.2.3) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "request_time", "expected"),
    [
        pytest.param(h(f"Date: {date()}"), NOW, 0.0, id="new"),
        pytest.param(h(f"Date: {date()}", "Age: 30"), NOW, 30.0, id="age-header"),
        pytest.param(h(f"Date: {date()}", "Age: 30"), NOW - 2, 32.0, id="age-plus-response-delay"),
        pytest.param(h(f"Date: {date()}"), NOW - 2, 2.0, id="response-delay-alone"),
        pytest.param(h(f"Date: {date(-50)}"), NOW, 50.0, id="apparent-age-from-date"),
        pytest.param(h(f"Date: {date(-50)}", "Age: 10"), NOW, 50.0, id="apparent-age-larger"),
        pytest.param(h(f"Date: {date(-10)}", "Age: 40"), NOW, 40.0, id="corrected-age-larger"),
        pytest.param(h(f"Date: {date(100)}"), NOW, 0.0, id="date-in-the-future"),
        pytest.param(h("Age: abc"), NOW, 0.0, id="invalid-age-ignored"),
        pytest.param(h("Age: -5"), NOW, 0.0, id="negative-age-ignored"),
        pytest.param(h(), NOW, 0.0, id="no-date-is-receipt-time"),
        pytest.param(h("Date: garbage"), NOW, 0.0, id="invalid-date-is-receipt-time"),
        pytest.param(h(f"Date: {rfc850_date(-50)}"), NOW, 50.0, id="date-rfc850"),
        pytest.param(
            h(f"Date: {asctime_date(-50)}"),
            NOW,
            50.0,
            id="date-asctime",
        ),
        pytest.param(
            h(f"Age: {HUGE}"),
            NOW,
            float(DELTA_CAP),
            id="age-too-large-for-a-float",
        ),
    ],
)
def test_initial_age(headers, request_time, expected):
    """RFC 9111 §4.2.3: apparent_age = max(0, response_time - date_value); corrected_age_value
    = age_value + response_delay; the initial age is the larger. Without a valid ``Date`` the
    time of receipt stands in (RFC 9110 §6.6.1)."""
    assert freshness(headers, TTL, request_time, NOW).initial_age == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h("Cache-Control: max-age=60"), True, id="plain"),
        pytest.param(h("Cache-Control: must-revalidate"), False, id="must-revalidate"),  # §5.2.2.2
        # §5.2.2.8
        pytest.param(h("Cache-Control: proxy-revalidate"), False, id="proxy-revalidate"),
        pytest.param(h("Cache-Control: MUST-REVALIDATE"), False, id="directive-any-case"),
        pytest.param(
            h("Cache-Control: max-age=60", "Cache-Control: must-revalidate"),
            False,
            id="must-revalidate-on-second-line",
        ),
        pytest.param(h("Cache-Control: s-maxage=60"), False, id="s-maxage"),
        pytest.param(h("Cache-Control: no-cache"), False, id="no-cache"),
    ],
)
def test_stale_allowed(headers, expected):
    """RFC 9111 §4.2.4: a cache MUST NOT serve a stale response when an explicit directive
    forbids it: ``no-cache``, ``must-revalidate``, or (shared caches) ``proxy-revalidate`` or
    ``s-maxage``."""
    assert freshness(headers, TTL, NOW, NOW).stale_allowed is expected


# --- the entry's clock (core.modes entry) ----------------------------------------------------

JSON = RouteConfig(name="r", path="/r", ttl=TTL)
JSON_STALE = RouteConfig(name="r", path="/r", ttl=TTL, stale_while_revalidate=10, stale_if_error=20)
HTTP = RouteConfig(name="r", path="/r", mode="http", method="GET", ttl=TTL)
HTTP_STALE = RouteConfig(
    name="r",
    path="/r",
    mode="http",
    method="GET",
    ttl=TTL,
    stale_while_revalidate=10,
    stale_if_error=20,
)
WINDOWS = ("stale_while_revalidate", "stale_if_error")


@pytest.mark.parametrize(
    ("mode", "route", "headers", "times", "expected"),
    [
        # json mode: the route's ttl, stored when the answer arrived
        pytest.param(
            "json",
            JSON,
            h("Cache-Control: max-age=60", "Age: 10"),
            (NOW - 1, NOW),
            {"ttl": TTL, "stored_at": NOW},
            id="json-route-ttl-upstream-freshness-ignored",
        ),
        pytest.param(
            "json",
            JSON_STALE,
            h(),
            (NOW, NOW),
            {"stale_while_revalidate": 10.0, "stale_if_error": 20.0},
            id="json-route-stale-windows",
        ),
        # RFC 5861 §3 / §4: the upstream's own windows count, the larger wins
        pytest.param(
            "json",
            JSON_STALE,
            h("Cache-Control: stale-while-revalidate=60, stale-if-error=5"),
            (NOW, NOW),
            {"stale_while_revalidate": 60.0, "stale_if_error": 20.0},
            id="json-larger-window-wins",
        ),
        pytest.param(
            "json",
            JSON,
            h("Cache-Control: max-age=1", "Cache-Control: stale-if-error=30"),
            (NOW, NOW),
            {"stale_if_error": 30.0},
            id="json-window-on-second-line",
        ),
        pytest.param(
            "json",
            JSON,
            h("Cache-Control: stale-while-revalidate=abc, stale-if-error=-5"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0, "stale_if_error": 0.0},
            id="json-malformed-windows-ignored",
        ),
        pytest.param(
            "json",
            JSON,
            h("Cache-Control: stale-while-revalidate=inf"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0},
            id="json-non-numeric-window-ignored",
        ),
        # http mode: RFC 9111 freshness, the entry back-dated by its initial age (§4.2.3)
        pytest.param(
            "http",
            HTTP,
            h("Cache-Control: max-age=60"),
            (NOW, NOW),
            {"ttl": 60.0, "stored_at": NOW},
            id="http-lifetime",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Cache-Control: max-age=60", "Age: 10"),
            (NOW - 1, NOW),
            {"ttl": 60.0, "stored_at": NOW - 11},
            id="http-back-dated-by-corrected-age",
        ),
        pytest.param(
            "http",
            HTTP,
            h(f"Date: {date(-20)}", "Cache-Control: max-age=60"),
            (NOW, NOW),
            {"stored_at": NOW - 20},
            id="http-back-dated-by-apparent-age",
        ),
        pytest.param(
            "http", HTTP, h(), (NOW, NOW), {"ttl": 0.0}, id="http-nothing-to-go-on-not-fresh"
        ),
        pytest.param(
            "http",
            HTTP_STALE,
            h("Cache-Control: max-age=60"),
            (NOW, NOW),
            {"stale_while_revalidate": 10.0, "stale_if_error": 20.0},
            id="http-route-stale-windows",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Cache-Control: max-age=60, stale-if-error=600"),
            (NOW, NOW),
            {"stale_if_error": 600.0},
            id="http-upstream-stale-if-error",
        ),
        # §4.2.4: where stale is forbidden, every window is closed
        pytest.param(
            "http",
            HTTP_STALE,
            h("Cache-Control: max-age=60, must-revalidate"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0, "stale_if_error": 0.0},
            id="http-must-revalidate-closes-route-windows",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Cache-Control: max-age=60, stale-while-revalidate=30, must-revalidate"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0},
            id="http-must-revalidate-closes-upstream-window",
        ),
        pytest.param(
            "http",
            HTTP_STALE,
            h("Cache-Control: max-age=60, proxy-revalidate"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0, "stale_if_error": 0.0},
            id="http-proxy-revalidate-closes-windows",
        ),
        pytest.param(
            "http",
            HTTP_STALE,
            h("Cache-Control: no-cache"),
            (NOW, NOW),
            {"ttl": 0.0, "stale_while_revalidate": 0.0, "stale_if_error": 0.0},
            id="http-no-cache-closes-windows",
        ),
        pytest.param(
            "http",
            HTTP_STALE,
            h("Cache-Control: s-maxage=60"),
            (NOW, NOW),
            {"stale_while_revalidate": 0.0, "stale_if_error": 0.0},
            id="http-s-maxage-closes-windows",
        ),
    ],
)
def test_entry_clock(mode, route, headers, times, expected):
    """When an entry was stored and how long it is fresh and may be served stale: json mode
    from the route (and the upstream's RFC 5861 windows); http mode from RFC 9111 §4.2, with
    the stale windows closed where §4.2.4 forbids serving stale."""
    entry = MODES[mode].entry(route, h(), "/r", 200, headers, b"{}", times)

    assert {name: getattr(entry, name) for name in expected} == expected


# --- revalidation (RFC 9111 §4.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(h('ETag: "a"'), {"If-None-Match": '"a"'}, id="etag"),
        pytest.param(h('ETag: W/"a"'), {"If-None-Match": 'W/"a"'}, id="weak-etag"),
        pytest.param(
            h(f"Last-Modified: {date(-60)}"), {"If-Modified-Since": date(-60)}, id="last-modified"
        ),
        pytest.param(
            h('ETag: "a"', f"Last-Modified: {date(-60)}"),
            {"If-None-Match": '"a"', "If-Modified-Since": date(-60)},
            id="both",
        ),
        # the engine passes dict(entry.headers): names as the upstream spelled them
        pytest.param(
            {"etag": '"a"', "last-modified": date(-60)},
            {"If-None-Match": '"a"', "If-Modified-Since": date(-60)},
            id="plain-dict-any-case",
        ),
        pytest.param(h("Content-Type: text/plain"), {}, id="no-validator"),
    ],
)
def test_validators(stored, expected):
    """RFC 9111 §4.3.1: a stored ``ETag`` is sent as ``If-None-Match``, a stored
    ``Last-Modified`` as ``If-Modified-Since``."""
    assert validators(stored) == expected


@pytest.mark.parametrize(
    ("stored", "fresh", "expected"),
    [
        pytest.param(
            (("ETag", '"a"'), ("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")),
            h("Cache-Control: max-age=120", f"Date: {date()}"),
            (
                ("ETag", '"a"'),
                ("Content-Type", "text/plain"),
                ("Cache-Control", "max-age=120"),
                ("Date", date()),
            ),
            id="304-values-replace-and-add",
        ),
        pytest.param(
            (("content-type", "text/plain"),),
            h("Content-Type: text/html"),
            (("Content-Type", "text/html"),),
            id="replaced-any-case",
        ),
        pytest.param(
            (("ETag", '"a"'), ("Content-Encoding", "gzip"), ("Content-MD5", "x")),
            h('ETag: "b"', "Content-Encoding: br", "Content-MD5: y", "Expires: 0"),
            (("ETag", '"a"'), ("Content-Encoding", "gzip"), ("Content-MD5", "x"), ("Expires", "0")),
            id="what-describes-the-stored-content-is-kept",
        ),
        pytest.param(
            (("Content-Range", "bytes 0-1/2"),),
            h("content-range: bytes 0-4/5"),
            (("Content-Range", "bytes 0-1/2"),),
            id="content-range-kept-any-case",
        ),
        pytest.param(
            (("Link", "<x>"), ("Content-Type", "text/plain"), ("Link", "<y>")),
            h("Link: <z>"),
            (("Content-Type", "text/plain"), ("Link", "<z>")),
            id="every-stored-line-replaced",
        ),
        pytest.param(
            (("Link", "<x>"),),
            h("Link: <a>", "Link: <b>"),
            (("Link", "<a>"), ("Link", "<b>")),
            id="every-304-line-kept",
        ),
        pytest.param(
            (("Content-Type", "text/plain"), ("Content-Length", "12")),
            h("Content-Length: 0"),
            (("Content-Type", "text/plain"), ("Content-Length", "12")),
            id="content-length-not-updated",
        ),
        pytest.param(
            (("Content-Type", "text/plain"),),
            h(),
            (("Content-Type", "text/plain"),),
            id="empty-304",
        ),
    ],
)
def test_merge_not_modified(stored, fresh, expected):
    """RFC 9111 §3.2 / §4.3.4: the headers of a 304 replace every stored line of the same
    name (and are added where new), except those describing the stored content, which a
    304 cannot change: ``Content-Length`` (§3.2), ``Content-Encoding`` and ``Content-MD5``
    (fields the stored response depends upon, §3.2), ``Content-Range`` (§3.2 lets a cache
    exclude it) and ``ETag`` (the validator that selected the stored response, §4.3.4)."""
    assert merge_not_modified(stored, fresh) == expected


# --- a client's own conditional request (RFC 9110 §13.1) -------------------------------------

STORED = h('ETag: "a"', f"Last-Modified: {date(-60)}")


@pytest.mark.parametrize(
    ("request_headers", "stored", "expected"),
    [
        pytest.param(h(), STORED, False, id="unconditional"),
        pytest.param(h('If-None-Match: "a"'), STORED, True, id="etag-matches"),
        pytest.param(h('If-None-Match: "b"'), STORED, False, id="etag-differs"),
        pytest.param(h('If-None-Match: "b", "a"'), STORED, True, id="etag-in-list"),
        pytest.param(h('If-None-Match: W/"a"'), STORED, True, id="weak-request-tag"),
        pytest.param(h('If-None-Match: "a"'), h('ETag: W/"a"'), True, id="weak-stored-tag"),
        pytest.param(h('If-None-Match: "A"'), STORED, False, id="tags-are-case-sensitive"),
        pytest.param(h("If-None-Match: *"), STORED, True, id="star"),
        pytest.param(h('if-none-match: "a"'), STORED, True, id="header-name-any-case"),
        pytest.param(h('If-None-Match: "a"'), h(), False, id="nothing-stored-to-match"),
        # §13.1.3: If-Modified-Since is ignored when If-None-Match is present
        pytest.param(
            h('If-None-Match: "b"', f"If-Modified-Since: {date()}"),
            STORED,
            False,
            id="if-none-match-wins",
        ),
        pytest.param(
            h('If-None-Match: "a"', f"If-Modified-Since: {date()}"),
            h(f"Last-Modified: {date(-60)}"),
            False,
            id="if-none-match-wins-without-stored-etag",
        ),
        pytest.param(
            h('If-None-Match: "b"', 'If-None-Match: "a"'),
            STORED,
            True,
            id="etag-on-second-line",
        ),
        pytest.param(h(f"If-Modified-Since: {date()}"), STORED, True, id="not-modified-since"),
        pytest.param(
            h(f"If-Modified-Since: {date(-60)}"), STORED, True, id="modified-exactly-then"
        ),
        pytest.param(h(f"If-Modified-Since: {date(-120)}"), STORED, False, id="modified-since"),
        pytest.param(h("If-Modified-Since: yesterday"), STORED, False, id="invalid-date-ignored"),
        pytest.param(
            h(f"If-Modified-Since: {date()}"), h('ETag: "a"'), False, id="no-last-modified"
        ),
        pytest.param(h(f"If-Modified-Since: {rfc850_date()}"), STORED, True, id="rfc850-date"),
        pytest.param(
            h(f"If-Modified-Since: {asctime_date()}"),
            STORED,
            True,
            id="asctime-date",
        ),
    ],
)
def test_not_modified(request_headers, stored, expected):
    """RFC 9110 §13.1.2: ``If-None-Match`` is false when a listed tag weakly matches the
    stored ``ETag`` (or it is ``*``); §13.1.3: else ``If-Modified-Since`` is false when the
    stored ``Last-Modified`` is no later than it; an invalid date is ignored. A false
    condition on a GET is answered 304 (§13.2.2)."""
    assert not_modified(request_headers, stored) is expected
