"""Wiring: the proxy server and the admin app around one runtime, and serving them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from core.config import Config
from proxy.admin import RUNTIME, build_admin_app
from proxy.connections import ConnectionLimits
from proxy.engine import Engine
from proxy.fastpath import FastPathServer
from proxy.forward import REPLAY_LIMIT
from proxy.runtime import Runtime

log = logging.getLogger(__name__)

RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


def build_proxy_server(runtime: Runtime) -> web.Server:
    """The client-facing server: connections start on the L1 fast path
    (``proxy/fastpath.py``); everything else goes to one handler, with no router or
    application machinery in the way. A client that goes away cancels its handler. Every
    connection is bounded in number and time (``proxy/connections.py``)."""
    return FastPathServer(
        Engine(runtime),
        ConnectionLimits(runtime.config.server, runtime.metrics),
        request_factory=request_factory(runtime),
        handler_cancellation=True,
        access_log=None,  # the JSON access log (logging.access_log) is written by the handler
    )


def request_factory(runtime: Runtime) -> RequestFactory:
    """How the proxy port's aiohttp protocol builds a request: cacheable bodies (and small
    idempotent pass-through ones, to be replayable) are read whole up to their limit;
    others are streamed."""
    body_limit = max([REPLAY_LIMIT, *(route.max_body_size for route in runtime.config.routes)])
    loop = asyncio.get_running_loop()

    def make_request(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=body_limit + 1
        )

    return make_request


def _settle_garbage_collector() -> None:
    """What start-up built (modules, config, models) lives as long as the process: freeze it
    out of the collector's scans, and collect the young generation less often, so a cache
    full of long-lived entries is not rescanned every few requests."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def build_admin(runtime: Runtime) -> web.Application:
    """The admin app; it owns the runtime's lifecycle (``cleanup_ctx``), so it is set up
    before the proxy port opens and cleaned up after the proxy port has drained."""
    app = build_admin_app(runtime)
    app.cleanup_ctx.append(_runtime_lifecycle)
    return app


async def _runtime_lifecycle(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.start()
    yield
    await runtime.close()


async def serve(config: Config, worker: int = 0) -> None:
    """Serve the proxy and admin ports until SIGTERM or SIGINT, then drain:

    ``/readyz`` turns 503 at once; the proxy keeps serving for ``drain_delay`` (so the
    endpoint removal reaches every client), then stops accepting; in-flight requests and
    background refreshes get ``drain_timeout`` to finish. A second signal skips the delay.

    With ``server.workers`` > 1 each worker process shares the proxy port (SO_REUSEPORT);
    worker 0 also serves the admin port and runs the system monitor.
    """
    primary = worker == 0
    runtime = Runtime(config, primary=primary)
    admin_runner = web.AppRunner(build_admin(runtime), access_log=None)
    await admin_runner.setup()  # starts the runtime
    _settle_garbage_collector()
    proxy_runner = web.ServerRunner(
        build_proxy_server(runtime), shutdown_timeout=config.server.drain_timeout
    )
    await proxy_runner.setup()
    server = config.server
    await web.TCPSite(proxy_runner, server.host, server.port, reuse_port=server.workers > 1).start()
    if primary:
        await web.TCPSite(admin_runner, server.admin_host, server.admin_port).start()
    log.info(
        "sidecache worker %d listening on %s:%d (admin %s:%d) → %s",
        worker,
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
        await proxy_runner.cleanup()  # stops listening, waits for in-flight requests
        await admin_runner.cleanup()  # background work, then the runtime's connections
        log.info("stopped")
