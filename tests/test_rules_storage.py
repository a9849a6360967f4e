"""Storage rules as tables, with no socket: may a response be stored (json and http mode),
which of its headers are kept, what it is tagged with, which variant it is and which stored
variant answers which request, and what an unsafe request invalidates. One row per rule;
ids name the rule."""

from __future__ import annotations

import pytest

from core.config import RouteConfig, TenantConfig
from core.headers import storable_headers
from core.http_cache import (
    ABSENT,
    invalidated_uris,
    selects,
    unstorable_reason,
    uri_tag,
    variant_names,
    vary_names,
    vary_values,
)
from core.modes import MODES
from core.policy import surrogate_keys, uncacheable_reason
from tests.rules import h

NOW = 1_700_000_000.0
JSON = RouteConfig(name="r", path="/r")
JSON_VARY = RouteConfig(name="r", path="/r", vary=("Accept-Language",))
JSON_ENCODED = RouteConfig(name="r", path="/r", vary=("Accept-Encoding",))
JSON_404 = RouteConfig(name="r", path="/r", statuses=(200, 404))
JSON_SHARED = RouteConfig(name="r", path="/r", tenant=TenantConfig(shared=True))
HTTP = RouteConfig(name="r", path="/r", mode="http", method="GET")


# --- json-mode storage rules (core.policy.uncacheable_reason) --------------------------------


@pytest.mark.parametrize(
    ("route", "status", "headers", "expected"),
    [
        pytest.param(JSON, 200, h(), None, id="plain-200"),
        pytest.param(JSON, 404, h(), "status", id="status-not-listed"),
        pytest.param(JSON, 500, h(), "status", id="server-error"),
        pytest.param(JSON_404, 404, h(), None, id="status-listed"),
        pytest.param(JSON, 200, h("Set-Cookie: s=1"), "set-cookie", id="set-cookie"),
        pytest.param(JSON, 200, h("set-cookie: s=1"), "set-cookie", id="set-cookie-any-case"),
        pytest.param(JSON, 200, h("Cache-Control: no-store"), "cache-control", id="no-store"),
        pytest.param(JSON, 200, h("Cache-Control: private"), "cache-control", id="private"),
        pytest.param(
            JSON,
            200,
            h("Cache-Control: max-age=60", "Cache-Control: private"),
            "cache-control",
            id="private-on-second-line",
        ),
        pytest.param(
            JSON, 200, h("Cache-Control: PRIVATE"), "cache-control", id="directive-any-case"
        ),
        # RFC 9111 §5.2.2.7: a shared cache may store the rest of a qualified-private
        # response; not storing it at all is the conservative reading
        pytest.param(
            JSON,
            200,
            h('Cache-Control: private="Set-Cookie"'),
            "cache-control",
            id="qualified-private",
        ),
        pytest.param(
            JSON,
            200,
            h("Content-Type: text/event-stream; charset=utf-8"),
            "stream",
            id="event-stream",
        ),
        pytest.param(
            JSON,
            200,
            h("Content-Type: Text/Event-Stream"),
            "stream",
            id="event-stream-any-case",
        ),
        pytest.param(
            JSON, 200, h("Content-Encoding: gzip"), "content-encoding", id="encoding-unkeyed"
        ),
        pytest.param(
            JSON, 200, h("Content-Encoding: GZIP"), "content-encoding", id="encoding-any-case"
        ),
        pytest.param(
            JSON,
            200,
            h("Content-Encoding: identity", "Content-Encoding: gzip"),
            "content-encoding",
            id="encoding-on-second-line",
        ),
        pytest.param(JSON, 200, h("Content-Encoding: identity"), None, id="identity-encoding"),
        pytest.param(
            JSON_ENCODED, 200, h("Content-Encoding: gzip"), None, id="encoding-keyed-by-route-vary"
        ),
        pytest.param(JSON, 200, h("Vary: Accept-Language"), "vary", id="vary-not-keyed"),
        pytest.param(JSON_VARY, 200, h("Vary: Accept-Language"), None, id="vary-keyed-by-route"),
        pytest.param(JSON_VARY, 200, h("Vary: accept-language"), None, id="vary-name-any-case"),
        pytest.param(
            JSON_VARY,
            200,
            h("Vary: Accept-Language", "Vary: X-Other"),
            "vary",
            id="vary-on-second-line",
        ),
        pytest.param(JSON, 200, h("Vary: Cookie"), None, id="vary-keyed-by-tenant"),
        pytest.param(
            JSON_SHARED,
            200,
            h("Vary: Cookie"),
            "vary",
            id="vary-on-tenant-header-of-shared-route",
        ),
        pytest.param(JSON, 200, h("Vary: *"), "vary", id="vary-star"),
        pytest.param(JSON, 200, h("Vary: ,"), None, id="vary-empty-members"),
        pytest.param(HTTP, 200, h("Vary: X-Anything"), None, id="http-stored-per-variant"),
        pytest.param(
            HTTP,
            200,
            h("Content-Encoding: br", "Vary: Accept-Encoding"),
            None,
            id="http-encoding-keyed-by-response-vary",
        ),
        pytest.param(
            HTTP,
            200,
            h("Content-Encoding: br"),
            None,
            id="http-encoding-without-vary-stored-per-accept-encoding",
        ),
    ],
)
def test_uncacheable_reason(route, status, headers, expected):
    """What keeps a response out of the cache in both modes: a status the route does not
    list, ``Set-Cookie``, ``no-store`` / ``private`` on any Cache-Control line (RFC 9111
    §5.2.2.5, §5.2.2.7), an event stream, an encoded body the key does not separate by
    ``Accept-Encoding``, or a ``Vary`` on a header the key does not cover (§4.1)."""
    by_variant = route.mode == "http"  # (what HttpMode passes)
    assert uncacheable_reason(route, status, headers, by_variant) == expected


# --- shared-cache storage rules (core.http_cache.unstorable_reason) --------------------------


@pytest.mark.parametrize(
    ("request_headers", "response_headers", "expected"),
    [
        pytest.param(h(), h("Cache-Control: max-age=60"), None, id="storable"),
        # §5.2.1.5
        pytest.param(h("Cache-Control: no-store"), h(), "request-no-store", id="request-no-store"),
        pytest.param(h(), h("Cache-Control: no-store"), "no-store", id="no-store"),  # §5.2.2.5
        pytest.param(h(), h("Cache-Control: private"), "private", id="private"),  # §5.2.2.7
        pytest.param(
            h(),
            h("Cache-Control: max-age=60", "cache-control: no-store"),
            "no-store",
            id="no-store-on-second-line",
        ),
        pytest.param(
            h(), h("Cache-Control: public, private"), "private", id="private-beats-public"
        ),
        pytest.param(h(), h("Set-Cookie: s=1"), "set-cookie", id="set-cookie"),
        pytest.param(h(), h("Vary: *"), "vary-star", id="vary-star"),  # §4.1
        pytest.param(h(), h("Vary: Accept, *"), "vary-star", id="vary-star-in-list"),
        pytest.param(h(), h("Vary: Accept", "Vary: *"), "vary-star", id="vary-star-second-line"),
        pytest.param(
            h("Authorization: Bearer t"),
            h("Cache-Control: max-age=60"),
            "authorization",
            id="authorization-without-permission",
        ),
        pytest.param(
            h("authorization: Bearer t"), h(), "authorization", id="authorization-any-case"
        ),
        pytest.param(
            h("Authorization: Bearer t"), h("Cache-Control: public"), None, id="auth-public"
        ),
        pytest.param(
            h("Authorization: Bearer t"), h("Cache-Control: PUBLIC"), None, id="auth-public-case"
        ),
        pytest.param(
            h("Authorization: Bearer t"), h("Cache-Control: s-maxage=60"), None, id="auth-s-maxage"
        ),
        pytest.param(
            h("Authorization: Bearer t"),
            h("Cache-Control: must-revalidate"),
            None,
            id="auth-must-revalidate",
        ),
        pytest.param(
            h("Authorization: Bearer t"),
            h("Cache-Control: proxy-revalidate, max-age=60"),
            "authorization",
            id="auth-proxy-revalidate-does-not-permit",
        ),
        pytest.param(
            h("Authorization: Bearer t"),
            h("Cache-Control: max-age=60", "Cache-Control: public"),
            None,
            id="auth-permission-on-second-line",
        ),
    ],
)
def test_shared_cache_unstorable_reason(request_headers, response_headers, expected):
    """RFC 9111 §3: a shared cache does not store a response to a ``no-store`` request or
    with ``no-store`` / ``private`` (§5.2.2.5, §5.2.2.7), nor one with ``Vary: *`` (§4.1);
    §3.5: a response to a request with ``Authorization`` only with ``public``, ``s-maxage``
    or ``must-revalidate``. ``Set-Cookie`` is never shared."""
    assert unstorable_reason(request_headers, response_headers) == expected


@pytest.mark.parametrize(
    ("mode", "route", "request_headers", "status", "headers", "expected"),
    [
        pytest.param("json", JSON, h(), 200, h(), None, id="json-storable"),
        # json mode keys the credential into the tenant partition instead
        pytest.param(
            "json", JSON, h("Authorization: Bearer t"), 200, h(), None, id="json-authorization"
        ),
        pytest.param("json", JSON, h(), 404, h(), "status", id="json-status"),
        pytest.param("json", JSON, h(), 200, h("Vary: *"), "vary", id="json-vary-star"),
        pytest.param(
            "http",
            HTTP,
            h("Authorization: Bearer t"),
            200,
            h(),
            "authorization",
            id="http-authorization",
        ),
        # RFC 9111 §3: without explicit freshness, only a heuristically cacheable status
        pytest.param("http", HTTP, h(), 302, h(), "status", id="http-status-first"),
        pytest.param("http", HTTP, h(), 404, h(), None, id="http-heuristic-status"),
        pytest.param(
            "http", HTTP, h(), 500, h("Cache-Control: max-age=60"), None, id="http-explicit-500"
        ),
        pytest.param("http", HTTP, h(), 206, h("Cache-Control: max-age=60"), "status", id="206"),
        # §5.2.2.3: must-understand: only a status understood, and then no-store is ignored
        pytest.param(
            "http",
            HTTP,
            h(),
            599,
            h("Cache-Control: max-age=60, must-understand, no-store"),
            "must-understand",
            id="http-must-understand-unknown-status",
        ),
        pytest.param(
            "http",
            HTTP,
            h(),
            200,
            h("Cache-Control: max-age=60, must-understand, no-store"),
            None,
            id="http-must-understand-known-status",
        ),
        # RFC 9213: a valid targeted field replaces Cache-Control
        pytest.param(
            "http",
            HTTP,
            h(),
            200,
            h("Cache-Control: max-age=60", "CDN-Cache-Control: no-store"),
            "no-store",
            id="http-cdn-cache-control-no-store",
        ),
        pytest.param(
            "http",
            HTTP,
            h(),
            200,
            h("Cache-Control: no-store", "CDN-Cache-Control: max-age=60"),
            None,
            id="http-cdn-cache-control-over-cache-control",
        ),
        pytest.param(
            "http", HTTP, h(), 200, h("Cache-Control: private"), "private", id="http-private"
        ),
        pytest.param("http", HTTP, h(), 200, h("Vary: *"), "vary-star", id="http-vary-star"),
        pytest.param(
            "http",
            HTTP,
            h(),
            200,
            h("Content-Encoding: gzip"),
            None,
            id="http-encoding-without-vary-stored-per-accept-encoding",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Cache-Control: no-store"),
            200,
            h(),
            "request-no-store",
            id="http-request-no-store",
        ),
        pytest.param(
            "http", HTTP, h(), 200, h("Vary: Accept-Language"), None, id="http-vary-storable"
        ),
    ],
)
def test_mode_unstorable_reason(mode, route, request_headers, status, headers, expected):
    """json mode applies the route's rules; http mode applies them and then RFC 9111 §3's."""
    assert MODES[mode].unstorable_reason(route, request_headers, status, headers) == expected


# --- what is kept of a stored response -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            h("Content-Type: application/json", 'ETag: "a"'),
            (("Content-Type", "application/json"), ("ETag", '"a"')),
            id="end-to-end-kept",
        ),
        pytest.param(
            h("Content-Length: 12", "Age: 5", "Content-Type: text/plain"),
            (("Content-Type", "text/plain"),),
            id="length-and-age-dropped",
        ),
        pytest.param(
            h("content-LENGTH: 12", "AGE: 5", "X-A: 1"),
            (("X-A", "1"),),
            id="dropped-any-case",
        ),
        pytest.param(
            h("Transfer-Encoding: chunked", "Connection: close", "Keep-Alive: timeout=5", "X-A: 1"),
            (("X-A", "1"),),
            id="hop-by-hop-dropped",
        ),
        pytest.param(
            h("Link: <a>", "Link: <b>"),
            (("Link", "<a>"), ("Link", "<b>")),
            id="repeated-lines-kept-in-order",
        ),
    ],
)
def test_storable_headers(headers, expected):
    """RFC 9111 §3.1: hop-by-hop headers are not stored; ``Content-Length`` is the replayed
    body's own and ``Age`` is computed when the entry is served (§4.2.3)."""
    assert storable_headers(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h("Surrogate-Key: a b"), ("a", "b"), id="surrogate-key-spaces"),
        pytest.param(h("Cache-Tag: a,b"), ("a", "b"), id="cache-tag-commas"),
        pytest.param(
            h("Surrogate-Key: a b", "Cache-Tag: b, c"), ("a", "b", "c"), id="both-unique-ordered"
        ),
        pytest.param(h("Surrogate-Key: a", "Surrogate-Key: b"), ("a", "b"), id="every-line"),
        pytest.param(h("surrogate-key: a", "CACHE-TAG: b"), ("a", "b"), id="name-any-case"),
        pytest.param(h("Surrogate-Key:  , "), (), id="blank"),
        pytest.param(h(), (), id="absent"),
    ],
)
def test_surrogate_keys(headers, expected):
    """Purge tags: every ``Surrogate-Key`` and ``Cache-Tag`` value, split on spaces or commas,
    first occurrence order, no duplicates."""
    assert surrogate_keys(headers) == expected


# --- variants (RFC 9111 §4.1) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            h("Vary: Accept-Language, accept-encoding"),
            ("accept-encoding", "accept-language"),
            id="lowercased-and-sorted",
        ),
        pytest.param(h("Vary: B", "Vary: A"), ("a", "b"), id="every-line"),
        pytest.param(h("Vary: A, a"), ("a",), id="duplicates-once"),
        pytest.param(h("Vary:  , ,"), (), id="empty-members"),
        pytest.param(h(), (), id="absent"),
        pytest.param(h("Vary: *"), ("*",), id="star"),
    ],
)
def test_vary_names(headers, expected):
    """RFC 9111 §4.1: the request headers a response varies on; names are case-insensitive
    and each line of ``Vary`` counts (RFC 9110 §5.3, §12.5.5)."""
    assert vary_names(headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h("Vary: B, A"), ("a", "b"), id="vary-only"),
        pytest.param(h("Content-Encoding: gzip"), ("accept-encoding",), id="coded-without-vary"),
        pytest.param(
            h("Content-Encoding: gzip", "Vary: Accept-Encoding"),
            ("accept-encoding",),
            id="coded-and-declared-once",
        ),
        pytest.param(
            h("Content-Encoding: br", "Vary: X-A"),
            ("accept-encoding", "x-a"),
            id="coded-with-other-vary",
        ),
        pytest.param(h("Content-Encoding: identity"), (), id="identity-is-no-coding"),
        pytest.param(h(), (), id="neither"),
    ],
)
def test_variant_names(headers, expected):
    """RFC 9111 §4.1: a stored response is selected by the headers its ``Vary`` names; a
    content-coded one also by ``Accept-Encoding``, declared or not, so a coded body only
    reaches a client that asked as its first requester did."""
    assert variant_names(headers) == expected


@pytest.mark.parametrize(
    ("names", "headers", "expected"),
    [
        pytest.param(
            ("accept-language",), h("Accept-Language: fr"), (("accept-language", "fr"),), id="one"
        ),
        pytest.param(
            ("accept-language",),
            h("Accept-Language: fr", "Accept-Language: de"),
            (("accept-language", "fr, de"),),
            id="lines-combined",
        ),
        pytest.param(
            ("accept-language",),
            h("Accept-Language: fr,   de"),
            (("accept-language", "fr, de"),),
            id="whitespace-collapsed",
        ),
        pytest.param(("accept-language",), h(), (("accept-language", ABSENT),), id="absent"),
        pytest.param(
            ("a", "b"), h("B: 2", "A: 1"), (("a", "1"), ("b", "2")), id="in-the-order-of-names"
        ),
        pytest.param((), h("A: 1"), (), id="no-names"),
    ],
)
def test_vary_values(names, headers, expected):
    """RFC 9111 §4.1: a variant is the request's values for the headers its response varies
    on, normalised by combining lines and collapsing whitespace."""
    assert vary_values(names, headers) == expected


FR = (("accept-language", "fr"),)
NO_ENCODING_SENT = vary_values(("accept-encoding",), h())


@pytest.mark.parametrize(
    ("stored", "headers", "expected"),
    [
        pytest.param((), h("Accept-Language: de"), True, id="no-vary"),
        pytest.param(FR, h("Accept-Language: fr"), True, id="same-value"),
        pytest.param(FR, h("Accept-Language: de"), False, id="other-value"),
        pytest.param(FR, h("ACCEPT-LANGUAGE: fr"), True, id="request-name-any-case"),
        pytest.param(FR, h(), False, id="absent-does-not-match-present"),
        pytest.param(
            (("accept-language", "fr, de"),),
            h("Accept-Language: fr", "Accept-Language: de"),
            True,
            id="lines-match-their-combined-value",
        ),
        pytest.param(
            (*FR, ("accept-encoding", "gzip")),
            h("Accept-Language: fr", "Accept-Encoding: br"),
            False,
            id="every-header-must-match",
        ),
        pytest.param(NO_ENCODING_SENT, h(), True, id="absent-matches-absent"),
        pytest.param(
            NO_ENCODING_SENT,
            h("Accept-Encoding:"),
            False,
            id="absent-does-not-match-empty",
        ),
    ],
)
def test_selects(stored, headers, expected):
    """RFC 9111 §4.1: a stored variant answers a request only when every header it varies on
    has the same (normalised) value in the request."""
    assert selects(stored, headers) is expected


# --- invalidation (RFC 9111 §4.4) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path_qs", "headers", "expected"),
    [
        pytest.param("/a", h(), ["/a"], id="target-uri"),
        pytest.param("/a?x=1", h(), ["/a?x=1"], id="target-uri-with-query"),
        pytest.param("/a", h("Location: /b"), ["/a", "/b"], id="location"),
        pytest.param("/a", h("Content-Location: /c"), ["/a", "/c"], id="content-location"),
        pytest.param(
            "/a",
            h("Location: /b", "Content-Location: /c"),
            ["/a", "/b", "/c"],
            id="location-and-content-location",
        ),
        pytest.param("/a", h("Location: //evil.example/b"), ["/a"], id="network-path-ignored"),
        pytest.param(
            "/a", h("Location: https://evil.example/b"), ["/a"], id="absolute-uri-ignored"
        ),
        pytest.param("/a", h("Location: b"), ["/a"], id="relative-path-ignored"),
    ],
)
def test_invalidated_uris(path_qs, headers, expected):
    """RFC 9111 §4.4: an unsafe request invalidates its target URI and may invalidate the
    ``Location`` / ``Content-Location`` URIs, but never one of another origin; only
    origin-relative paths are certain to be same-origin."""
    assert invalidated_uris(path_qs, headers) == expected


@pytest.mark.parametrize(
    ("path_qs", "expected"),
    [
        pytest.param("/a", "uri:/a", id="path"),
        pytest.param("/a?b=1&c=2", "uri:/a?b=1&c=2", id="path-and-query"),
    ],
)
def test_uri_tag(path_qs, expected):
    """Every stored response for a URI carries one tag, so §4.4 invalidation is a tag purge."""
    assert uri_tag(path_qs) == expected


# --- what an entry is stored with (core.modes entry: tags, variant, headers) ------------------

HTTP_KEEP = RouteConfig(name="r", path="/r", mode="http", method="GET", keep=120)


@pytest.mark.parametrize(
    ("mode", "route", "request_headers", "path_qs", "headers", "field", "expected"),
    [
        pytest.param(
            "json", JSON, h(), "/r", h("Surrogate-Key: a b"), "tags", ("a", "b"), id="json-tags"
        ),
        pytest.param("json", JSON, h(), "/r", h(), "tags", (), id="json-no-uri-tag"),
        pytest.param(
            "http",
            HTTP,
            h(),
            "/r?q=1",
            h("Surrogate-Key: a"),
            "tags",
            ("a", "uri:/r?q=1"),
            id="http-tags-and-uri-tag",
        ),
        pytest.param("http", HTTP, h(), "/r", h(), "tags", ("uri:/r",), id="http-uri-tag"),
        pytest.param(
            "json",
            JSON_VARY,
            h("Accept-Language: fr"),
            "/r",
            h("Vary: Accept-Language"),
            "vary",
            (),
            id="json-vary-is-in-the-key",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Accept-Language: fr"),
            "/r",
            h("Vary: Accept-Language"),
            "vary",
            (("accept-language", "fr"),),
            id="http-variant-values",
        ),
        pytest.param(
            "http",
            HTTP,
            h("Accept-Language: fr"),
            "/r",
            h("Vary: X-Absent"),
            "vary",
            (("x-absent", ABSENT),),
            id="http-variant-of-absent-header",
        ),
        pytest.param("http", HTTP, h(), "/r", h(), "vary", (), id="http-no-vary"),
        pytest.param(
            "http",
            HTTP,
            h("Accept-Encoding: gzip"),
            "/r",
            h("Content-Encoding: gzip"),
            "vary",
            (("accept-encoding", "gzip"),),
            id="http-coded-body-is-a-variant-of-accept-encoding",
        ),
        pytest.param(
            "http",
            HTTP,
            h(),
            "/r",
            h("Content-Encoding: x-custom"),
            "vary",
            (("accept-encoding", ABSENT),),
            id="http-coded-body-for-a-request-without-accept-encoding",
        ),
        # RFC 9111 §4.3.1: a stale entry with a validator is kept to revalidate it; §4.2.4:
        # one that may be served stale is kept to answer while the upstream is unreachable
        pytest.param(
            "http", HTTP_KEEP, h(), "/r", h('ETag: "a"'), "keep_stale", 120.0, id="http-etag-kept"
        ),
        pytest.param(
            "http",
            HTTP_KEEP,
            h(),
            "/r",
            h("Last-Modified: Tue, 14 Nov 2023 22:00:00 GMT"),
            "keep_stale",
            120.0,
            id="http-last-modified-kept",
        ),
        pytest.param(
            "http",
            HTTP_KEEP,
            h(),
            "/r",
            h("Cache-Control: max-age=1, must-revalidate"),
            "keep_stale",
            0.0,
            id="http-no-validator-never-stale-not-kept",
        ),
        pytest.param(
            "http", HTTP_KEEP, h(), "/r", h(), "keep_stale", 120.0, id="http-may-be-stale-kept"
        ),
        pytest.param(
            "json", JSON, h(), "/r", h('ETag: "a"'), "keep_stale", 0.0, id="json-never-kept"
        ),
        pytest.param(
            "http",
            HTTP,
            h(),
            "/r",
            h("Content-Length: 2", "Age: 3", "Content-Type: application/json"),
            "headers",
            (("Content-Type", "application/json"),),
            id="storable-headers-only",
        ),
        pytest.param("json", JSON, h(), "/r", h(), "route", "r", id="route-name"),
        pytest.param("json", JSON, h(), "/r", h(), "status", 200, id="status"),
        pytest.param("http", HTTP, h(), "/r", h(), "body", b"{}", id="body"),
    ],
)
def test_entry_is_stored_with(mode, route, request_headers, path_qs, headers, field, expected):
    """What a stored entry carries besides its clock: purge tags (``Surrogate-Key`` /
    ``Cache-Tag``, and in http mode its URI for §4.4), its variant (§4.1), how long it is
    kept stale for revalidation (§4.3.1) and the headers to replay."""
    entry = MODES[mode].entry(route, request_headers, path_qs, 200, headers, b"{}", (NOW, NOW))

    assert getattr(entry, field) == expected
