"""Wiring: the proxy app and the admin app around one runtime, and serving them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from core.config import Config
from proxy.admin import RUNTIME, build_admin_app
from proxy.handler import ProxyHandler
from proxy.runtime import Runtime

log = logging.getLogger(__name__)


def build_proxy_app(runtime: Runtime) -> web.Application:
    """The client-facing app. It owns the runtime's lifecycle (``cleanup_ctx``)."""
    app = web.Application(client_max_size=0)
    app[RUNTIME] = runtime
    handler = ProxyHandler(runtime)
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    app.cleanup_ctx.append(_runtime_lifecycle)
    return app


async def _runtime_lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.start()
    yield
    await runtime.close()


def runner_options(config: Config) -> dict[str, object]:
    """Server options for the proxy port, shared by ``serve`` and the tests: a client that
    goes away cancels its handler, and shutdown waits ``drain_timeout`` for the rest."""
    return {"handler_cancellation": True, "shutdown_timeout": config.server.drain_timeout}


async def serve(config: Config) -> None:
    """Serve the proxy and admin ports until SIGTERM or SIGINT, then drain:

    ``/readyz`` turns 503 at once; the proxy keeps serving for ``drain_delay`` (so the
    endpoint removal reaches every client), then stops accepting; in-flight requests and
    background refreshes get ``drain_timeout`` to finish. A second signal skips the delay.
    """
    runtime = Runtime(config)
    proxy_runner = web.AppRunner(
        build_proxy_app(runtime), access_log=None, **runner_options(config)
    )
    admin_runner = web.AppRunner(build_admin_app(runtime), access_log=None)
    await proxy_runner.setup()
    await admin_runner.setup()
    server = config.server
    await web.TCPSite(proxy_runner, server.host, server.port, reuse_port=server.workers > 1).start()
    await web.TCPSite(admin_runner, server.admin_host, server.admin_port).start()
    log.info(
        "sidecache listening on %s:%d (admin %s:%d) → %s",
        server.host,
        server.port,
        server.admin_host,
        server.admin_port,
        config.upstream.url,
    )
    signals = asyncio.Queue[int]()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    try:
        received = await signals.get()
        runtime.draining = True
        log.info(
            "signal %s: draining (accepting for %gs more, then up to %gs for in-flight work)",
            signal.Signals(received).name,
            server.drain_delay,
            server.drain_timeout,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signals.get(), server.drain_delay)
    finally:
        await proxy_runner.cleanup()  # stops listening, waits for in-flight, closes runtime
        await admin_runner.cleanup()
        log.info("stopped")
