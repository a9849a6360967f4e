"""A real upstream for tests: an aiohttp app on a loopback port that counts the calls it
receives and can be slowed, made to fail, or stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Canned:
    """A fixed answer for one path."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"{}"


class FakeUpstream:
    """Echoes every request as JSON (method, path, query, headers, body digest) unless a path
    has a canned answer. ``/sse`` streams events; ``/big?size=N`` streams N bytes."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.canned: dict[str, Canned] = {}
        self.sse_release = asyncio.Event()
        #: When set to an event, every echoed request waits for it, and ``holding`` is set
        #: once one does: a test acts while a request is at the upstream.
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/sse", self._sse)
        app.router.add_route("*", "/big", self._big)
        app.router.add_route("*", "/catalog/big", self._big)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.1, handler_cancellation=True, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        self.calls[request.path] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            if self.hold is not None:
                self.holding.set()
                await self.hold.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            canned = self.canned.get(request.path)
            if canned is not None:
                return web.Response(status=canned.status, headers=canned.headers, body=canned.body)
            echo = {
                "n": self.calls[request.path],
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body_size": len(body),
                "body_sha256": hashlib.sha256(body).hexdigest(),
            }
            # Lets a test choose the purge tags of an answer.
            tags = request.headers.get("X-Echo-Surrogate-Key")
            return web.json_response(echo, headers={"Surrogate-Key": tags} if tags else None)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        """One event at once, the rest only after ``sse_release`` is set."""
        self.calls[request.path] += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await self.sse_release.wait()
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def _big(self, request: web.Request) -> web.StreamResponse:
        """Streams ``size`` bytes in 64 KiB chunks (chunked encoding when ``chunked=1``)."""
        self.calls[request.path] += 1
        size = int(request.query.get("size", "1048576"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("chunked") != "1":
            response.content_length = size
        await response.prepare(request)
        chunk = bytes(range(256)) * 256
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await response.write(part)
            sent += len(part)
        await response.write_eof()
        return response


def echo_of(body: bytes) -> dict:
    return json.loads(body)
