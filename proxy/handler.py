"""aiohttp's front end onto the engine: requests the fast path (``proxy/fastpath.py``) hands
over arrive here as aiohttp ``BaseRequest``s and leave as aiohttp responses; every step in
between is the engine's (``proxy/engine.py``)."""

from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp import web

from proxy.engine import Engine
from proxy.exchange import NO_BODY, Body, Reply, Request, StreamBody

log = logging.getLogger(__name__)


class ProxyHandler:
    """Adapts one aiohttp request to the engine and its reply back to aiohttp."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        engine = self.engine
        peer = request.remote or ""
        exchange = Request(
            method=request.method,
            path=request.path,
            target=engine.target(request.raw_path, request.headers, request.scheme, peer),
            headers=request.headers,
            peer=peer,
            body=_body(request, engine.body_timeout),
        )
        reply: Reply | None = None
        status = 499  # the client went away first
        try:
            reply = await engine.handle(exchange)
            response = await _respond(request, reply)
            status = response.status
            return response
        finally:
            engine.record(exchange, reply, status, time.perf_counter() - started)


def _body(request: web.BaseRequest, timeout: float) -> Body:
    if not request.body_exists:
        return NO_BODY
    return StreamBody(request.content, request.content_length, timeout)


async def _respond(request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
    if reply.stream is None:
        response = web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        if reply.close:
            response.force_close()
        return response
    return await _relay(request, reply)


async def _relay(request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
    """Relay an upstream response to the client chunk by chunk as it arrives."""
    upstream = reply.stream
    assert upstream is not None
    try:
        out = web.StreamResponse(status=reply.status, reason=upstream.reason)
        out.headers.extend(reply.headers)
        await out.prepare(request)
        if reply.prefix:
            await out.write(reply.prefix)
        async for chunk in upstream.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Headers are already sent: the only honest signal left is a cut connection.
        log.warning("upstream stream broke off: %r", exc)
        raise
    finally:
        upstream.release()
