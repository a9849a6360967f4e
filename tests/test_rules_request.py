"""Request-side rules as tables, with no socket: may a request use the cache (json and http
mode), what it is keyed as, what its effective target is, which of its headers go upstream,
and which tenant it belongs to. One row per rule; ids name the rule."""

from __future__ import annotations

import pytest

from core.config import RouteConfig, TenantConfig
from core.headers import (
    Target,
    combined,
    effective_target,
    end_to_end,
    is_trusted,
    upstream_headers,
)
from core.http_cache import request_decision
from core.keys import tenant_of, tenant_partition
from core.modes import MODES
from core.policy import Decision, cache_control, decide
from tests.rules import h

LOOKUP, REFRESH, BYPASS = Decision.LOOKUP, Decision.REFRESH, Decision.BYPASS
JSON = RouteConfig(name="r", path="/r", max_body_size=1024)
HTTP = RouteConfig(name="r", path="/r", mode="http", method="GET", max_body_size=1024)


# --- Cache-Control parsing (RFC 9111 §5.2) ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "max-age=60, no-cache", {"max-age": "60", "no-cache": None}, id="names-and-arguments"
        ),
        pytest.param(
            "Max-Age=60, NO-STORE", {"max-age": "60", "no-store": None}, id="names-lowercased"
        ),
        pytest.param('private="Set-Cookie"', {"private": "Set-Cookie"}, id="quoted-argument"),
        pytest.param(
            "max-age=60,, ,public", {"max-age": "60", "public": None}, id="empty-members-skipped"
        ),
        pytest.param('community="UCI"', {"community": "UCI"}, id="extension-directive-kept"),
        pytest.param("no-cache=", {"no-cache": ""}, id="empty-argument"),
        pytest.param("", {}, id="empty"),
        pytest.param(None, {}, id="absent"),
    ],
)
def test_cache_control_parsing(value, expected):
    """RFC 9111 §5.2: directive names are case-insensitive, arguments are a token or a quoted
    string; RFC 9110 §5.6.1: a recipient accepts empty list members."""
    assert cache_control(value) == expected


# --- json mode: may this request use the cache (core.policy.decide) --------------------------


@pytest.mark.parametrize(
    ("headers", "body_size", "expected"),
    [
        pytest.param(h(), 10, LOOKUP, id="plain"),
        pytest.param(h(), 0, LOOKUP, id="empty-body"),
        pytest.param(h(), None, BYPASS, id="unknown-length-body"),
        pytest.param(h(), 1024, LOOKUP, id="body-at-limit"),
        pytest.param(h(), 1025, BYPASS, id="body-over-limit"),
        pytest.param(h("Cache-Control: no-store"), 10, BYPASS, id="no-store"),
        pytest.param(h("Cache-Control: no-cache"), 10, REFRESH, id="no-cache"),
        pytest.param(h("cache-control: No-Store"), 10, BYPASS, id="header-and-directive-case"),
        pytest.param(
            h("Cache-Control: no-cache, no-store"), 10, BYPASS, id="no-store-beats-no-cache"
        ),
        pytest.param(
            h("Cache-Control: max-age=60", "Cache-Control: no-store"),
            10,
            BYPASS,
            id="no-store-on-second-line",
        ),
        pytest.param(
            h("Cache-Control: max-age=60", "Cache-Control: no-cache"),
            10,
            REFRESH,
            id="no-cache-on-second-line",
        ),
        pytest.param(h("Pragma: no-cache"), 10, REFRESH, id="pragma-no-cache"),
        pytest.param(h("Pragma: NO-CACHE"), 10, REFRESH, id="pragma-case"),
        pytest.param(
            h("Pragma: no-cache, x-debug"),
            10,
            REFRESH,
            id="pragma-no-cache-in-list",
        ),
        pytest.param(
            h("Pragma: x-debug", "Pragma: no-cache"),
            10,
            REFRESH,
            id="pragma-no-cache-on-second-line",
        ),
        # json mode: freshness is the route's ttl; a client's max-age is not a rule here
        pytest.param(h("Cache-Control: max-age=0"), 10, LOOKUP, id="max-age-0-not-a-json-rule"),
        pytest.param(h("Cache-Control: no-store"), None, BYPASS, id="no-store-with-unknown-length"),
    ],
)
def test_json_request_decision(headers, body_size, expected):
    """json mode: ``no-store`` and bodies of unknown length or over ``max_body_size`` bypass;
    ``no-cache`` (RFC 9111 §5.2.1.4) or ``Pragma: no-cache`` (§5.4) refresh; every
    Cache-Control line counts (RFC 9110 §5.3)."""
    assert decide(JSON, headers, body_size) is expected


# --- http mode: request directives (core.http_cache.request_decision) ------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(h(), LOOKUP, id="plain"),
        pytest.param(h("Cache-Control: no-store"), BYPASS, id="no-store"),  # §5.2.1.5
        pytest.param(h("Cache-Control: no-cache"), REFRESH, id="no-cache"),  # §5.2.1.4
        pytest.param(h("Cache-Control: max-age=0"), REFRESH, id="max-age-0"),  # §5.2.1.1
        pytest.param(h('Cache-Control: max-age="0"'), REFRESH, id="max-age-0-quoted"),
        # §5.2.1.1: max-age=N>0 is a preference; the stored entry's own freshness decides
        pytest.param(h("Cache-Control: max-age=60"), LOOKUP, id="max-age-positive"),
        pytest.param(h("Cache-Control: no-cache, no-store"), BYPASS, id="no-store-beats-no-cache"),
        pytest.param(
            h("Cache-Control: max-age=60", "Cache-Control: no-store"),
            BYPASS,
            id="no-store-on-second-line",
        ),
        pytest.param(
            h("Cache-Control: max-age=60", "Cache-Control: no-cache"),
            REFRESH,
            id="no-cache-on-second-line",
        ),
        pytest.param(h("CACHE-CONTROL: NO-CACHE"), REFRESH, id="header-and-directive-case"),
        pytest.param(h("Pragma: no-cache"), REFRESH, id="pragma-no-cache"),  # §5.4
        pytest.param(h("Pragma: no-cache, x-debug"), REFRESH, id="pragma-no-cache-in-list"),
        pytest.param(
            h("Pragma: x-debug", "Pragma: no-cache"),
            REFRESH,
            id="pragma-no-cache-on-second-line",
        ),
    ],
)
def test_http_request_decision(headers, expected):
    """RFC 9111 §5.2.1: request ``no-store`` bypasses (§5.2.1.5); ``no-cache`` (§5.2.1.4),
    ``max-age=0`` (§5.2.1.1) and ``Pragma: no-cache`` (§5.4) revalidate; every line of the
    header counts (RFC 9110 §5.3)."""
    assert request_decision(headers) is expected


# --- the mode's request-side answers (core.modes) --------------------------------------------


@pytest.mark.parametrize(
    ("mode", "route", "headers", "body_size", "expected"),
    [
        pytest.param("json", JSON, h(), 10, LOOKUP, id="json-plain"),
        pytest.param("json", JSON, h(), None, BYPASS, id="json-unknown-length"),
        pytest.param("json", JSON, h(), 4096, BYPASS, id="json-body-over-limit"),
        pytest.param("json", JSON, h("Cache-Control: max-age=0"), 10, LOOKUP, id="json-max-age-0"),
        pytest.param("http", HTTP, h(), 0, LOOKUP, id="http-get-without-content"),
        pytest.param("http", HTTP, h("Cache-Control: max-age=0"), 0, REFRESH, id="http-max-age-0"),
        pytest.param("http", HTTP, h("Cache-Control: no-store"), 0, BYPASS, id="http-no-store"),
        pytest.param("http", HTTP, h(), 10, BYPASS, id="http-get-with-content"),
        pytest.param("http", HTTP, h(), None, BYPASS, id="http-get-chunked-content"),
    ],
)
def test_mode_decide(mode, route, headers, body_size, expected):
    """Each mode answers the request-side question with its own rules: json mode with
    ``core.policy.decide``, http mode with RFC 9111 §5.2.1 request directives."""
    assert MODES[mode].decide(route, headers, body_size) is expected


@pytest.mark.parametrize(
    ("mode", "method", "body", "expected"),
    [
        pytest.param("json", "POST", b'{"q":1}', ("POST", b'{"q":1}'), id="json-method-and-body"),
        pytest.param("json", "GET", b"", ("GET", b""), id="json-get"),
        pytest.param("http", "GET", b"", ("GET", b""), id="http-get"),
        # RFC 9110 §9.3.2: HEAD is GET without content, so the stored GET answers it
        pytest.param("http", "HEAD", b"", ("GET", b""), id="http-head-keyed-as-get"),
        pytest.param("http", "GET", b"ignored", ("GET", b""), id="http-body-not-keyed"),
    ],
)
def test_mode_keyed_request(mode, method, body, expected):
    """What part of the request line and body the key is derived from, per mode."""
    assert MODES[mode].keyed_request(method, body, {}) == expected


# --- effective target (core.headers.effective_target) ----------------------------------------


@pytest.mark.parametrize(
    ("raw_target", "headers", "trusted", "expected"),
    [
        pytest.param(
            "/a?b=1",
            h("Host: Example.COM"),
            False,
            Target("http", "example.com", "/a", "b=1"),
            id="origin-form-host-lowercased",
        ),
        pytest.param("/a", h(), False, Target("http", "", "/a", ""), id="no-host"),
        pytest.param(
            "/a%2Fb?q",
            h("Host: a.example"),
            False,
            Target("http", "a.example", "/a%2Fb", "q"),
            id="raw-path-kept",
        ),
        pytest.param(
            "/a?b=1#frag",
            h("Host: a.example"),
            False,
            Target("http", "a.example", "/a", "b=1"),
            id="fragment-dropped-from-query",
        ),
        pytest.param(
            "http://Other.Example:8080/x?y=1",
            h("Host: a.example"),
            False,
            Target("http", "other.example:8080", "/x", "y=1"),
            id="absolute-form-overrides-host",
        ),
        pytest.param(
            "http://other.example",
            h("Host: a.example"),
            False,
            Target("http", "other.example", "/", ""),
            id="absolute-form-empty-path",
        ),
        # the scheme is the connection's (or a trusted proxy's), never the client's word
        pytest.param(
            "https://other.example/x",
            h(),
            False,
            Target("http", "other.example", "/x", ""),
            id="absolute-form-scheme-not-believed",
        ),
        pytest.param(
            "http://t/x",
            h(),
            False,
            Target("http", "t", "/x", ""),
            id="absolute-form-host-found-inside-scheme",
        ),
        pytest.param(
            "/x",
            h("Host: a.example", "X-Forwarded-Proto: https", "X-Forwarded-Host: b.example"),
            False,
            Target("http", "a.example", "/x", ""),
            id="untrusted-forwarding-headers-ignored",
        ),
        pytest.param(
            "/x",
            h("Host: a.example", "X-Forwarded-Proto: https", "X-Forwarded-Host: b.example"),
            True,
            Target("https", "b.example", "/x", ""),
            id="trusted-forwarding-headers-believed",
        ),
        pytest.param(
            "/x",
            h("Host: a.example", "X-Forwarded-Host: evil.example, lb.example"),
            True,
            Target("http", "lb.example", "/x", ""),
            id="trusted-nearest-hop-of-list",
        ),
        pytest.param(
            "/x",
            h("X-Forwarded-Proto: HTTPS", "X-Forwarded-Host: B.Example"),
            True,
            Target("https", "b.example", "/x", ""),
            id="trusted-values-lowercased",
        ),
        pytest.param(
            "/x",
            h("Host: a.example"),
            True,
            Target("http", "a.example", "/x", ""),
            id="trusted-without-forwarding-headers",
        ),
        pytest.param(
            "http://other.example/x",
            h("X-Forwarded-Host: b.example"),
            True,
            Target("http", "b.example", "/x", ""),
            id="trusted-forwarding-over-absolute-form",
        ),
        pytest.param(
            "/x",
            h("Host: a.example", "X-Forwarded-Host: evil.example", "X-Forwarded-Host: lb.example"),
            True,
            Target("http", "lb.example", "/x", ""),
            id="trusted-nearest-hop-of-repeated-lines",
        ),
    ],
)
def test_effective_target(raw_target, headers, trusted, expected):
    """RFC 9110 §7.1 / RFC 9112 §3.2.2: the authority comes from an absolute-form target,
    else from ``Host``; a trusted peer's ``X-Forwarded-Proto`` / ``-Host`` (the nearest hop's
    value) take precedence; scheme and authority are lowercased, the path is kept raw."""
    assert effective_target(raw_target, headers, "http", trusted) == expected


# --- headers sent upstream (core.headers.upstream_headers / end_to_end) ----------------------

TARGET = Target("http", "a.example", "/x", "")
PEER = "192.0.2.9"
SET_HERE = ["X-Forwarded-For: 192.0.2.9", "X-Forwarded-Proto: http", "X-Forwarded-Host: a.example"]


@pytest.mark.parametrize(
    ("headers", "target", "expected"),
    [
        pytest.param(
            h("Host: a.example", "Accept: */*"),
            TARGET,
            ["Accept: */*", *SET_HERE],
            id="host-replaced-by-forwarding-headers",
        ),
        pytest.param(
            h(
                "Forwarded: for=1.2.3.4;host=evil.example",
                "X-Forwarded-Host: evil.example",
                "X-Forwarded-Proto: https",
                "X-Real-IP: 1.2.3.4",
                "X-Original-URL: /admin",
                "X-Rewrite-URL: /admin",
                "X-Forwarded-Prefix: /evil",
                "Accept: */*",
            ),
            TARGET,
            ["Accept: */*", *SET_HERE],
            id="client-forwarding-headers-dropped",
        ),
        pytest.param(
            h("X-Forwarded-For: 198.51.100.1"),
            TARGET,
            ["X-Forwarded-For: 198.51.100.1, 192.0.2.9", *SET_HERE[1:]],
            id="x-forwarded-for-appended",
        ),
        pytest.param(
            h("X-Forwarded-For: 198.51.100.1", "x-forwarded-for: 198.51.100.2"),
            TARGET,
            ["X-Forwarded-For: 198.51.100.1, 198.51.100.2, 192.0.2.9", *SET_HERE[1:]],
            id="x-forwarded-for-every-line",
        ),
        pytest.param(
            h(
                "Connection: keep-alive, X-Secret",
                "X-Secret: s",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Transfer-Encoding: chunked",
                "Upgrade: websocket",
                "Proxy-Authorization: Basic eA==",
                "Proxy-Connection: keep-alive",
                "Accept: */*",
            ),
            TARGET,
            ["Accept: */*", *SET_HERE],
            id="hop-by-hop-and-connection-named-dropped",
        ),
        pytest.param(
            h("connection: x-secret", "X-SECRET: s", "Accept: */*"),
            TARGET,
            ["Accept: */*", *SET_HERE],
            id="connection-named-any-case",
        ),
        pytest.param(
            h("Connection: keep-alive", "Connection: X-A", "X-A: 1", "X-B: 2"),
            TARGET,
            ["X-B: 2", *SET_HERE],
            id="connection-every-line",
        ),
        pytest.param(
            h("Authorization: Bearer t", "Cookie: a=1", "Content-Type: application/json"),
            TARGET,
            ["Authorization: Bearer t", "Cookie: a=1", "Content-Type: application/json", *SET_HERE],
            id="end-to-end-kept",
        ),
        pytest.param(
            h("Accept: */*"),
            Target("https", "", "/x", ""),
            ["Accept: */*", "X-Forwarded-For: 192.0.2.9", "X-Forwarded-Proto: https"],
            id="no-authority-no-x-forwarded-host",
        ),
    ],
)
def test_upstream_headers(headers, target, expected):
    """RFC 9110 §7.6.1: hop-by-hop headers and those named in ``Connection`` are not
    forwarded; the client's forwarding headers are replaced by ones set from what was
    received, ``X-Forwarded-For`` keeps the client's chain (every line) and appends the peer."""
    out = upstream_headers(headers, PEER, target)

    assert [f"{name}: {value}" for name, value in out.items()] == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            h("Set-Cookie: a=1", "Set-Cookie: b=2"),
            ["Set-Cookie: a=1", "Set-Cookie: b=2"],
            id="repeated-lines-kept-in-order",
        ),
        pytest.param(
            h("Transfer-Encoding: chunked", "Keep-Alive: timeout=5", "Content-Type: text/plain"),
            ["Content-Type: text/plain"],
            id="hop-by-hop-dropped",
        ),
        pytest.param(
            h("Connection: X-A", "X-A: 1", "x-a: 2", "X-B: 3"),
            ["X-B: 3"],
            id="connection-named-every-line-dropped",
        ),
        # forwarding headers are upstream_headers' business, not end_to_end's
        pytest.param(h("Host: a.example"), ["Host: a.example"], id="host-is-end-to-end"),
    ],
)
def test_end_to_end(headers, expected):
    """RFC 9110 §7.6.1: what remains of a message's headers once hop-by-hop ones, and those
    the ``Connection`` header names, are removed."""
    assert [f"{name}: {value}" for name, value in end_to_end(headers).items()] == expected


@pytest.mark.parametrize(
    ("headers", "name", "expected"),
    [
        pytest.param(h("Vary: a", "Vary: b"), "Vary", "a, b", id="every-line"),
        pytest.param(h("vary: a", "VARY: b"), "Vary", "a, b", id="name-any-case"),
        pytest.param(h("Vary: a, b"), "Vary", "a, b", id="one-line-list"),
        pytest.param(h(), "Vary", "", id="absent"),
        pytest.param({"Vary": "a"}, "Vary", "a", id="plain-mapping"),
    ],
)
def test_combined(headers, name, expected):
    """RFC 9110 §5.3: the field lines of a list header are one comma-separated value."""
    assert combined(headers, name) == expected


@pytest.mark.parametrize(
    ("peer", "networks", "expected"),
    [
        pytest.param("10.1.2.3", ("10.0.0.0/8",), True, id="inside-network"),
        pytest.param("192.168.0.1", ("10.0.0.0/8",), False, id="outside-network"),
        pytest.param("10.1.2.3", ("192.168.0.0/16", "10.0.0.0/8"), True, id="any-network"),
        pytest.param("10.0.0.5", ("10.0.0.5",), True, id="single-address"),
        pytest.param("10.0.0.5", ("10.0.0.1/24",), True, id="host-bits-allowed"),
        pytest.param("2001:db8::1", ("2001:db8::/32",), True, id="ipv6"),
        pytest.param("10.1.2.3", (), False, id="no-trusted-proxies"),
        pytest.param("", ("10.0.0.0/8",), False, id="no-peer"),
        pytest.param("/run/sidecache.sock", ("10.0.0.0/8",), False, id="peer-not-an-address"),
    ],
)
def test_is_trusted(peer, networks, expected):
    """Only a peer inside ``server.trusted_proxies`` is believed for forwarding headers."""
    assert is_trusted(peer, networks) is expected


# --- tenant partition (core.keys.tenant_of / tenant_partition) -------------------------------

DEFAULT = TenantConfig()
SHARED = TenantConfig(shared=True)
SESSION = TenantConfig(cookies=("session",))
CUSTOM = TenantConfig(headers=("X-Tenant",))


@pytest.mark.parametrize(
    ("tenant", "headers"),
    [
        pytest.param(DEFAULT, h(), id="no-credentials"),
        pytest.param(DEFAULT, h("Accept: */*"), id="non-credential-headers"),
        pytest.param(DEFAULT, h("Authorization:"), id="empty-credential"),
        pytest.param(SHARED, h("Authorization: Bearer a", "Cookie: s=1"), id="shared-route"),
        pytest.param(SESSION, h("Cookie: theme=dark"), id="cookie-without-the-named-cookie"),
        pytest.param(SESSION, h("Cookie: Session=1"), id="cookie-names-are-case-sensitive"),
        pytest.param(CUSTOM, h("Authorization: Bearer a"), id="header-not-configured"),
        pytest.param(
            TenantConfig(headers=("Authorization",), cookies=("session",)),
            h("Cookie: session=1"),
            id="cookie-names-without-cookie-header-configured",
        ),
    ],
)
def test_requests_outside_any_tenant(tenant, headers):
    """Without a configured credential (or on a shared route) a request is in the ``-``
    partition, the one every anonymous request shares."""
    assert tenant_of(headers, tenant) == "-"


@pytest.mark.parametrize(
    ("tenant", "a", "b", "same"),
    [
        pytest.param(
            DEFAULT,
            h("Authorization: Bearer a"),
            h("Authorization: Bearer a"),
            True,
            id="same-credential",
        ),
        pytest.param(
            DEFAULT,
            h("Authorization: Bearer a"),
            h("Authorization: Bearer b"),
            False,
            id="different-credentials",
        ),
        pytest.param(
            DEFAULT,
            h("authorization: Bearer a"),
            h("AUTHORIZATION: Bearer a"),
            True,
            id="header-name-case",
        ),
        pytest.param(
            DEFAULT, h("Authorization: a"), {"Authorization": "a"}, True, id="plain-mapping"
        ),
        pytest.param(
            DEFAULT, h("Authorization: x"), h("Cookie: x"), False, id="same-value-other-header"
        ),
        pytest.param(DEFAULT, h("X-Api-Key: k1"), h("X-Api-Key: k2"), False, id="api-key"),
        pytest.param(
            DEFAULT,
            h("Proxy-Authorization: Basic a"),
            h("Proxy-Authorization: Basic b"),
            False,
            id="proxy-authorization",
        ),
        pytest.param(
            DEFAULT,
            h("Authorization: a", "Authorization: b"),
            h("Authorization: a"),
            False,
            id="second-line-counts",
        ),
        pytest.param(
            DEFAULT,
            h("Cookie: s=1", "Cookie: t=2"),
            h("Cookie: t=2", "Cookie: s=1"),
            False,
            id="line-order-counts",
        ),
        pytest.param(
            DEFAULT,
            h("Cookie: s=1; theme=dark"),
            h("Cookie: s=1; theme=light"),
            False,
            id="whole-cookie-header-by-default",
        ),
        pytest.param(
            SESSION,
            h("Cookie: session=1; theme=dark"),
            h("Cookie: theme=light; session=1"),
            True,
            id="unnamed-cookies-ignored",
        ),
        pytest.param(
            SESSION,
            h("Cookie: session=1"),
            h("Cookie: session=2"),
            False,
            id="named-cookie-counts",
        ),
        pytest.param(
            SESSION,
            h("Cookie: theme=dark", "Cookie: session=1"),
            h("Cookie: session=1"),
            True,
            id="named-cookie-on-second-line",
        ),
        pytest.param(
            SESSION,
            h("Cookie: session=1; session=2"),
            h("Cookie: session=1"),
            False,
            id="repeated-named-cookie-counts",
        ),
        pytest.param(
            SESSION,
            h("Cookie: session = 1"),
            h("Cookie: session=1"),
            True,
            id="cookie-whitespace-ignored",
        ),
        pytest.param(
            SHARED,
            h("Authorization: Bearer a"),
            h("Authorization: Bearer b"),
            True,
            id="shared-ignores-credentials",
        ),
        pytest.param(
            CUSTOM, h("X-Tenant: a"), h("X-Tenant: b"), False, id="configured-header-counts"
        ),
        pytest.param(
            CUSTOM,
            h("X-Tenant: a", "Authorization: Bearer 1"),
            h("X-Tenant: a", "Authorization: Bearer 2"),
            True,
            id="only-configured-headers-count",
        ),
    ],
)
def test_tenant_partition(tenant, a, b, same):
    """Two requests share a partition exactly when every value of every configured tenant
    header (``Cookie`` narrowed to ``cookies``) is the same, repeated lines included."""
    assert (tenant_of(a, tenant) == tenant_of(b, tenant)) is same


def test_tenant_partition_of_names_directly_matches_tenant_of():
    """``tenant_of`` is ``tenant_partition`` over the configured names unless shared."""
    headers = h("Cookie: session=1; theme=dark", "X-Api-Key: k")

    assert tenant_of(headers, SESSION) == tenant_partition(
        headers, SESSION.headers, SESSION.cookies
    )
