"""``POST /purge`` on the admin port: bearer-token auth, a strictly validated body, and one
call into ``core.purge.Purger``.

Bodies: ``{"all": true}``, ``{"route": NAME}``, ``{"tag": TAG}`` or
``{"request": {"method", "path", "headers", "body"}}``.

Answers ``{"purged": REPORT}``: what each tier dropped (``l1``, ``l2``, ``semantic``; ``null``
where uncounted) and ``replicas_notified``, the subscribers the broadcast reached (this
replica included).

- ``200``: complete. Every configured tier purged and the broadcast sent: every subscribed
  replica drops its copies on delivery.
- ``503``: incomplete, repeat it once the store answers. This replica's L1 was purged, but
  ``errors`` names each part that was not done: ``l2: …`` or ``semantic: …`` (that store
  still holds the entries) and ``broadcast: …`` (``replicas_notified`` is ``null``: no other
  replica was told; those cut off from Redis too drop their whole L1 when they resubscribe,
  the others keep their copies until they expire).
- ``400`` a bad body (the message names the field), ``401`` / ``403`` no or a wrong token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from core.headers import Target
from core.invalidation import ByRoute, ByTag, Everything, PurgeTarget
from proxy.runtime import Runtime

_REQUEST_FIELDS = {"method", "path", "headers", "body"}


class BadPurge(ValueError):
    """The purge body is invalid; the message names the field."""


async def purge(request: web.Request, runtime: Runtime) -> web.Response:
    denied = _check_auth(request, runtime)
    if denied is not None:
        return denied
    try:
        data = json.loads(await request.read())
        report = await runtime.purger.purge(_target(runtime, data))
    except json.JSONDecodeError as exc:
        return _error(400, f"body: not valid JSON ({exc.msg})")
    except BadPurge as exc:
        return _error(400, str(exc))
    status = 200 if report.complete else 503
    return web.json_response({"purged": report}, status=status)


def _target(runtime: Runtime, data: Any) -> PurgeTarget:
    if not isinstance(data, dict) or len(data) != 1:
        raise BadPurge('body: expected exactly one of "all", "route", "tag", "request"')
    ((kind, value),) = data.items()
    if kind == "all":
        if value is not True:
            raise BadPurge("all: expected true")
        return Everything()
    if kind == "route":
        if not isinstance(value, str) or runtime.config.route(value) is None:
            raise BadPurge(f"route: no route named {json.dumps(value)}")
        return ByRoute(value)
    if kind == "tag":
        if not isinstance(value, str) or not value.strip():
            raise BadPurge("tag: expected a non-empty string")
        return ByTag(value.strip())
    if kind == "request":
        return _request_target(runtime, value)
    raise BadPurge(f"{kind}: unknown field")


def _request_target(runtime: Runtime, spec: Any) -> ByTag:
    """The request's tag, derived exactly as the proxy derives it for this request."""
    if not isinstance(spec, dict):
        raise BadPurge("request: expected an object")
    unknown = sorted(set(spec) - _REQUEST_FIELDS)
    if unknown:
        raise BadPurge(f"request.{unknown[0]}: unknown field")
    method, target = spec.get("method", "GET"), spec.get("path")
    if not isinstance(method, str) or not method.isalpha():
        raise BadPurge("request.method: expected an HTTP method")
    if not isinstance(target, str) or not target.startswith("/"):
        raise BadPurge('request.path: expected a path starting with "/"')
    headers = spec.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BadPurge("request.headers: expected an object of strings")
    path, _, query = target.partition("?")
    route = runtime.routes.match(method.upper(), path)
    if route is None:
        raise BadPurge(f"request.path: no cached route matches {method.upper()} {path}")
    body = spec.get("body")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()  # a string is the raw body, as sent
    else:
        raw = json.dumps(body).encode()
    headers = CIMultiDict(headers)
    target = Target("http", headers.get("Host", ""), path, query)  # any authority: the tag
    return runtime.purger.request_target(route, method.upper(), target, headers, raw)


def _check_auth(request: web.Request, runtime: Runtime) -> web.Response | None:
    """Bearer token from the environment variable ``admin.token_env``; without a token,
    purging is allowed only when the admin port listens on loopback."""
    token = os.environ.get(runtime.config.admin.token_env, "")
    if not token:
        if _is_loopback(runtime.config.server.admin_host):
            return None
        return _error(403, f"purge disabled: set {runtime.config.admin.token_env}")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        response = _error(401, "missing bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="sidecache-admin"'
        return response
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(403, "wrong token")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
