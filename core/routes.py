"""Matching a request (method + path) to the first configured route."""

from __future__ import annotations

import re

from core.config import RouteConfig
from core.modes import MODES


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches one path segment, ``**`` any number of segments; the rest is literal."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class RouteTable:
    """The configured routes, compiled once; ``match`` is on every request's path."""

    def __init__(self, routes: tuple[RouteConfig, ...]) -> None:
        self._exact: dict[tuple[str, str], RouteConfig] = {}
        self._patterns: list[tuple[int, frozenset[str], re.Pattern[str], RouteConfig]] = []
        for order, route in enumerate(routes):
            methods = frozenset(route.methods)
            if "*" not in route.path and "*" not in methods:
                for method in methods:
                    if MODES[route.mode].handles(method):
                        self._exact.setdefault((method, route.path), route)
            self._patterns.append((order, methods, compile_pattern(route.path), route))
        self._order = {route.name: i for i, route in enumerate(routes)}

    def match(self, method: str, path: str) -> RouteConfig | None:
        """The first route for ``method`` and ``path``; ``HEAD`` also matches an HTTP-mode
        ``GET`` route (it is answered from the stored ``GET``)."""
        route = self._match(method, path)
        if route is None and method == "HEAD":
            route = self._match("GET", path)
            return route if route is not None and MODES[route.mode].head_from_get else None
        return route

    def http_route(self, path: str) -> RouteConfig | None:
        """The HTTP-mode route whose stored responses a request to ``path`` may invalidate."""
        route = self._match("GET", path)
        return route if route is not None and MODES[route.mode].invalidated_by_unsafe else None

    def _match(self, method: str, path: str) -> RouteConfig | None:
        exact = self._exact.get((method, path))
        # An exact hit is the answer unless an earlier wildcard route also matches.
        for order, route_methods, pattern, route in self._patterns:
            if exact is not None and order >= self._order[exact.name]:
                return exact
            if ("*" in route_methods or method in route_methods) and pattern.match(path):
                if not MODES[route.mode].handles(method):
                    continue  # (an HTTP-mode route passes methods other than GET/HEAD through)
                return route
        return exact
