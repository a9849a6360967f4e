"""Header rules: which headers cross the proxy, which are set by it, and what the request's
effective target is.

One rule drives both: no value a client controls is both forwarded and left out of the key.
So the forwarding headers a client sends (``Host``, ``X-Forwarded-*``, ``Forwarded``, ...)
are never passed on as they came; sidecache sets ``X-Forwarded-For`` / ``-Proto`` / ``-Host``
itself from what it received, and the scheme and authority it sends are part of the key
(``Target``). A peer listed in ``server.trusted_proxies`` (a load balancer in front) is
believed for ``X-Forwarded-Proto`` and ``X-Forwarded-Host``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from multidict import CIMultiDict, MultiMapping

#: Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded nor stored.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

#: Headers by which a client could tell the service where the request was "really" sent
#: (frameworks build links and redirects from them). Never forwarded as the client sent them.
FORWARDING = frozenset(
    {
        "host",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-scheme",
        "x-forwarded-server",
        "x-forwarded-ssl",
        "x-original-host",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "x-real-ip",
        "x-url-scheme",
        "front-end-https",
    }
)

#: Request headers that change what a request means to common frameworks: forwarded, so
#: each is part of every key (present or not).
MEANING = ("content-type", "content-encoding", "x-http-method-override", "x-http-method",
           "x-method-override")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """The effective request target (RFC 9110 §7.1): where the client sent the request."""

    scheme: str
    authority: str
    path: str  # raw, as sent (``%2F`` and ``/`` are different paths)
    query: str  # raw, without the ``?``

    @property
    def path_qs(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def effective_target(
    raw_target: str,
    headers: MultiMapping[str],
    scheme: str,
    trusted: bool,
) -> Target:
    """The target of a request line's ``raw_target`` received over ``scheme``.

    The authority comes from an absolute-form target, else from ``Host`` (RFC 9112 §3.2.2);
    from a trusted peer, ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` take precedence.
    """
    authority = headers.get("Host", "")
    if not raw_target.startswith("/") and "://" in raw_target:  # absolute-form
        parts = urlsplit(raw_target)  # (splits without decoding: the target stays raw)
        authority = parts.netloc
        raw_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if trusted:
        scheme = _last(combined(headers, "X-Forwarded-Proto")) or scheme
        authority = _last(combined(headers, "X-Forwarded-Host")) or authority
    path, _, query = raw_target.partition("?")
    return Target(scheme.lower(), authority.lower(), path, query.partition("#")[0])


def end_to_end(
    headers: MultiMapping[str], dropped: frozenset[str] = HOP_BY_HOP
) -> CIMultiDict[str]:
    """``headers`` without hop-by-hop ones, including those named in ``Connection`` (and
    without any other ``dropped`` name, lower-case)."""
    named = {h.strip().lower() for v in headers.getall("Connection", ()) for h in v.split(",")}
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in dropped and name.lower() not in named
    )


def storable_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The response headers worth replaying from cache."""
    return tuple(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() not in ("content-length", "age")
    )


def replayed(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Stored or buffered (end-to-end) headers as a new response's; its length is the new
    body's own."""
    replay = CIMultiDict(headers)
    replay.popall("Content-Length", None)
    return replay


def upstream_headers(headers: MultiMapping[str], peer: str, target: Target) -> CIMultiDict[str]:
    """The client's headers as the service should see them: end-to-end only, the client's
    forwarding headers replaced by ones set here (``Host`` is the upstream's own)."""
    out = end_to_end(headers, _NOT_FORWARDED)
    prior = ", ".join(headers.getall("X-Forwarded-For", ()))
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = target.scheme
    if target.authority:
        out["X-Forwarded-Host"] = target.authority
    return out


#: What never reaches the upstream as the client sent it (one pass over the headers).
_NOT_FORWARDED = HOP_BY_HOP | FORWARDING


def is_trusted(peer: str, networks: tuple[str, ...]) -> bool:
    """Whether ``peer`` is one of the configured trusted proxies."""
    if not networks or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in _networks(networks))


@lru_cache(maxsize=8)
def _networks(
    networks: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _last(value: str | None) -> str:
    """The value the nearest proxy added to a comma-separated forwarding header."""
    return value.rsplit(",", 1)[-1].strip() if value else ""


def combined(headers: Mapping[str, str], name: str) -> str:
    """Every line of a list-valued header as one value (RFC 9110 §5.3): a second
    ``Cache-Control`` or ``Vary`` line counts as much as the first."""
    if isinstance(headers, MultiMapping):
        return ", ".join(headers.getall(name, ()))
    return headers.get(name, "")
