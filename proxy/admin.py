"""The admin port: metrics, health, readiness, stats, purge, dashboard."""

from __future__ import annotations

import asyncio
import functools
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.purge import purge as purge_endpoint
from proxy.runtime import Runtime
from proxy.stats import build_stats

RUNTIME = web.AppKey("runtime", Runtime)


def build_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", stats)
    app.router.add_post("/purge", purge)
    app.router.add_get("/", dashboard)
    return app


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.refresh_gauges()
    body = generate_latest(runtime.metrics.view())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the upstream accepts connections; tiers are reported, not required."""
    runtime = request.app[RUNTIME]
    if runtime.draining:
        return web.json_response({"ready": False, "draining": True}, status=503)
    upstream_ok = await _reachable(runtime.config.upstream.url)
    tiers = {"l1": "ok" if runtime.l1 is not None else "disabled"}
    tiers["l2"] = _tier_state(runtime.l2)
    tiers["semantic"] = _tier_state(runtime.semantic)
    body = {
        "ready": upstream_ok,
        "upstream": "ok" if upstream_ok else "unreachable",
        "tiers": tiers,
        "invalidation": _channel_state(runtime),
    }
    return web.json_response(body, status=200 if upstream_ok else 503)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(build_stats(request.app[RUNTIME]))


async def purge(request: web.Request) -> web.Response:
    return await purge_endpoint(request, request.app[RUNTIME])


def _channel_state(runtime: Runtime) -> str:
    """The invalidation channel: while it is ``down`` L1 still answers, but purges made
    through other replicas reach this one only when it is back (see core.invalidation)."""
    if runtime.bus is None:
        return "disabled"
    return "subscribed" if runtime.bus.healthy else "down"


def _tier_state(tier) -> str:
    if tier is None:
        return "disabled"
    return "ok" if tier.available else "unavailable"


async def _reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


#: The dashboard runs only its own inline script and style and talks only to this port.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:"
)


async def dashboard(request: web.Request) -> web.Response:
    """The live dashboard: one self-contained page that polls ``/stats``."""
    return web.Response(
        body=_dashboard_html(),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"},
    )


@functools.cache
def _dashboard_html() -> bytes:
    return resources.files("proxy").joinpath("dashboard.html").read_bytes()
