"""Matching a request to a route (``core.routes``): method and path, first route wins."""

from __future__ import annotations

import pytest

from core.config import RouteConfig
from core.routes import RouteTable

JSON_LIST = RouteConfig(name="json-list", path="/agents/select", method=("POST", "PUT"))
HTTP_LIST = RouteConfig(name="http-list", path="/web/**", mode="http", method=("GET", "POST"))
HTTP_EXACT = RouteConfig(name="http-exact", path="/page", mode="http", method=("GET", "DELETE"))
CATCH_ALL = RouteConfig(name="all", path="/**", mode="http", method="*")
JSON_GET = RouteConfig(name="json-get", path="/list", method="GET")


@pytest.mark.parametrize(
    ("routes", "method", "path", "expected"),
    [
        pytest.param((JSON_LIST,), "POST", "/agents/select", "json-list", id="json-list-first"),
        pytest.param((JSON_LIST,), "PUT", "/agents/select", "json-list", id="json-list-second"),
        pytest.param((JSON_LIST,), "PATCH", "/agents/select", None, id="json-list-not-listed"),
        pytest.param((JSON_GET,), "GET", "/list", "json-get", id="json-one-method"),
        pytest.param((JSON_GET,), "POST", "/list", None, id="json-other-method"),
        pytest.param((HTTP_LIST,), "GET", "/web/a", "http-list", id="http-list-get"),
        pytest.param((HTTP_LIST,), "HEAD", "/web/a", "http-list", id="http-list-head-from-get"),
        # listed, but http mode only caches GET and HEAD: passed through, never keyed as GET
        pytest.param((HTTP_LIST,), "POST", "/web/a", None, id="http-list-post-passes-through"),
        pytest.param((HTTP_EXACT,), "GET", "/page", "http-exact", id="http-exact-path-get"),
        pytest.param((HTTP_EXACT,), "DELETE", "/page", None, id="http-exact-path-unsafe-passes"),
        pytest.param((CATCH_ALL,), "GET", "/x", "all", id="catch-all-get"),
        pytest.param((CATCH_ALL,), "M-SEARCH", "/x", None, id="catch-all-unknown-passes"),
        pytest.param(
            (CATCH_ALL, JSON_LIST),
            "PUT",
            "/agents/select",
            "json-list",
            id="http-catch-all-leaves-what-it-does-not-cache-to-later-routes",
        ),
        pytest.param((JSON_GET, CATCH_ALL), "GET", "/list", "json-get", id="first-route-wins"),
    ],
)
def test_match(routes, method, path, expected):
    """The first route naming the method (or ``*``) and matching the path; an http-mode
    route takes only what it caches (GET, and HEAD answered from GET)."""
    route = RouteTable(routes).match(method, path)
    assert (route.name if route is not None else None) == expected


def test_an_http_route_listing_unsafe_methods_is_still_the_one_they_invalidate():
    assert RouteTable((HTTP_LIST,)).http_route("/web/a") is HTTP_LIST
