"""A small MCP server speaking revision 2026-07-28 faithfully enough to test a cache: every
POST carries one JSON-RPC request; results carry ``resultType``, ``ttlMs`` and
``cacheScope`` as the test sets them; answers are JSON, or an event stream (a progress
notification, then the response) when ``stream`` is on; ``subscriptions/listen`` opens a
stream the test pushes notifications into. It counts what it receives, per method."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from aiohttp import web

from examples.embedded import free_port

VERSION = "2026-07-28"


def mcp_body(method: str, params: dict[str, Any] | None = None, id: Any = 1) -> dict:
    """One JSON-RPC request of the 2026-07-28 revision (its version in ``_meta``)."""
    meta = {"io.modelcontextprotocol/protocolVersion": VERSION}
    params = {"_meta": meta, **(params or {})}
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params}


def mcp_headers(method: str, params: dict[str, Any] | None = None) -> dict[str, str]:
    """The headers that must mirror such a request's body."""
    headers = {"MCP-Protocol-Version": VERSION, "Mcp-Method": method}
    name = (params or {}).get("uri") or (params or {}).get("name")
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


class McpUpstream:
    """A real aiohttp server on loopback. ``hints[method]`` are the cache hints put into
    that method's results (``None``: none); ``gate`` holds answers until set."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.tokens: list[str | None] = []
        self.hints: dict[str, dict[str, Any] | None] = {}
        self.stream = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.listeners: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.listening = asyncio.Event()
        self.tools = ["list_agents"]
        self._runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/mcp", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        for queue in self.listeners:
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification on every open ``subscriptions/listen`` stream."""
        for queue in self.listeners:
            queue.put_nowait({"jsonrpc": "2.0", "method": method, "params": params or {}})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        message = await request.json()
        method, params = message["method"], message.get("params", {})
        self.calls[method] += 1
        self.tokens.append(request.headers.get("Authorization"))
        if request.headers.get("Mcp-Method") != method:
            return _error(message["id"], -32020, "Header mismatch", 400)
        if method == "subscriptions/listen":
            return await self._listen(request, message["id"])
        await self.gate.wait()
        outcome = self._result(method, params, request.headers.get("Authorization"))
        if "code" in outcome:
            return _error(message["id"], outcome["code"], outcome["message"], 200)
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": outcome}
        if not self.stream:
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"p": 1}}
        await response.write(f"event: message\ndata: {json.dumps(progress)}\n\n".encode())
        await response.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
        await response.write_eof()
        return response

    def _result(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        hints = self.hints.get(method, {"ttlMs": 60_000, "cacheScope": "public"}) or {}
        base: dict[str, Any] = {"resultType": "complete", **hints}
        served = self.calls[method]
        if method == "tools/list":
            cursor = params.get("cursor")
            if cursor not in (None, "page2"):
                return {"code": -32602, "message": "invalid cursor"}
            page = 2 if cursor else 1
            tools = [{"name": n, "inputSchema": {"type": "object"}} for n in self.tools]
            extra = {"nextCursor": "page2"} if page == 1 else {}
            return {**base, "tools": tools, "page": page, "served": served, **extra}
        if method == "resources/read":
            if "inputResponses" not in params and params["uri"].endswith("ask"):
                return {"resultType": "input_required", "inputRequests": {"q": {}}}
            text = f"{params['uri']} for {token} #{served}"
            return {**base, "contents": [{"uri": params["uri"], "text": text}]}
        if method == "tools/call":
            failing = params.get("arguments", {}).get("fail", False)
            return {"content": [{"type": "text", "text": f"#{served}"}], "isError": failing}
        return {**base, "served": served}

    async def _listen(self, request: web.Request, request_id: Any) -> web.StreamResponse:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.listeners.append(queue)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        ack = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged"}
        await response.write(f"data: {json.dumps(ack)}\n\n".encode())
        self.listening.set()
        while (message := await queue.get()) is not None:
            await response.write(f"data: {json.dumps(message)}\n\n".encode())
        return response


def _error(request_id: Any, code: int, message: str, status: int) -> web.Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status)
