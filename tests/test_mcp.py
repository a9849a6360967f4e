"""``mode: mcp`` end to end: a spec-faithful 2026-07-28 server of our own (tests/mcp_upstream.py)
for the cache hints, and the official Python SDK (``mcp``) server and client for the 2025
revisions, with sidecache between them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer

from core.sse import EventReader
from tests.conftest import wait_until
from tests.mcp_upstream import McpUpstream, mcp_body, mcp_headers

MCP_ROUTE = {
    "name": "mcp",
    "method": "*",
    "path": "/mcp",
    "mode": "mcp",
    "ttl": "1m",
    "max_ttl": "10m",
    "mcp": {"cache_tools": ["list_agents"]},
}
BOTH = "application/json, text/event-stream"


@pytest.fixture
async def server() -> AsyncIterator[McpUpstream]:
    upstream = McpUpstream()
    await upstream.start()
    yield upstream
    upstream.gate.set()
    await upstream.stop()


@pytest.fixture
async def proxy(make_proxy, server):
    return await make_proxy(upstream={"url": server.url}, routes=[MCP_ROUTE])


def headers_for(method: str, params: dict[str, Any] | None, token: str, accept: str) -> dict:
    headers = {**mcp_headers(method, params), "Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def call(
    proxy,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    id: Any = 1,
    token: str = "alice",
    accept: str = BOTH,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, Any]:
    """POST one call through the proxy: status, Cache-Status, and the JSON-RPC message
    (for an event stream: the list of messages in it)."""
    sent = headers if headers is not None else headers_for(method, params, token, accept)
    body = mcp_body(method, params, id)
    async with proxy.client.post("/mcp", json=body, headers=sent) as response:
        raw = await response.read()
        status = response.headers.get("Cache-Status", "")
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            events = EventReader().feed(raw)
            return response.status, status, [json.loads(event.data) for event in events]
        return response.status, status, json.loads(raw)


# --- sharing by cacheScope ------------------------------------------------------------------


async def test_a_public_result_is_shared_across_tokens(proxy, server):
    _, first, one = await call(proxy, "tools/list", token="alice")
    _, second, two = await call(proxy, "tools/list", token="bob")

    assert "stored" in first and "hit" in second
    assert two["result"]["tools"] == one["result"]["tools"]
    assert server.calls["tools/list"] == 1


async def test_a_public_result_stored_for_a_token_is_not_given_to_a_request_without_one(
    proxy, server
):
    await call(proxy, "tools/list", token="alice")
    _, anonymous, _ = await call(proxy, "tools/list", token="")
    _, again, _ = await call(proxy, "tools/list", token="")

    assert "hit" not in anonymous  # the service may refuse it: it asks the service itself
    assert "hit" in again  # anonymous requests share among themselves
    assert server.calls["tools/list"] == 2


async def test_a_private_result_is_reused_only_for_the_same_token(proxy, server):
    server.hints["resources/read"] = {"ttlMs": 60_000, "cacheScope": "private"}
    read = {"uri": "file:///notes"}
    _, _, alice = await call(proxy, "resources/read", read, token="alice")
    _, bob_status, bob = await call(proxy, "resources/read", read, token="bob")
    _, again_status, again = await call(proxy, "resources/read", read, token="alice")

    assert "hit" not in bob_status and "Bearer bob" in bob["result"]["contents"][0]["text"]
    assert "hit" in again_status
    assert again["result"]["contents"] == alice["result"]["contents"]
    assert 0 < again["result"]["ttlMs"] <= 60_000  # the freshness left, not the original
    assert server.calls["resources/read"] == 2


async def test_an_empty_cache_scope_is_taken_as_private(proxy, server):
    server.hints["tools/list"] = {"ttlMs": 60_000, "cacheScope": ""}
    await call(proxy, "tools/list", token="alice")
    _, status, _ = await call(proxy, "tools/list", token="bob")

    assert "hit" not in status
    assert server.calls["tools/list"] == 2


@pytest.mark.parametrize(
    "hints", [{"ttlMs": 0, "cacheScope": "public"}, {"cacheScope": "public"}, {"ttlMs": -1000}]
)
async def test_a_result_stale_at_once_is_never_stored(proxy, server, hints):
    server.hints["tools/list"] = hints
    await call(proxy, "tools/list")
    _, status, _ = await call(proxy, "tools/list")

    assert "hit" not in status and "stored" not in status
    assert server.calls["tools/list"] == 2


# --- the requester's id, JSON or an event stream ---------------------------------------------


@pytest.mark.parametrize("second_id", [1, "1", 42, "req-42"])
async def test_a_hit_carries_the_requesters_own_id(proxy, server, second_id):
    await call(proxy, "tools/list", id=1)
    _, status, answer = await call(proxy, "tools/list", id=second_id)

    assert "hit" in status
    assert answer["id"] == second_id and type(answer["id"]) is type(second_id)


async def test_the_same_cached_result_is_answered_as_json_or_as_an_event_stream(proxy, server):
    _, _, stored = await call(proxy, "tools/list", accept="application/json")
    _, json_status, as_json = await call(proxy, "tools/list", id=2, accept="application/json")
    _, sse_status, as_stream = await call(proxy, "tools/list", id=3, accept="text/event-stream")

    assert "hit" in json_status and "hit" in sse_status
    assert as_json["id"] == 2 and as_json["result"]["tools"] == stored["result"]["tools"]
    assert [message["id"] for message in as_stream] == [3]
    assert as_stream[0]["result"]["tools"] == stored["result"]["tools"]
    assert server.calls["tools/list"] == 1


async def test_a_streamed_miss_is_relayed_whole_and_only_its_result_is_stored(proxy, server):
    server.stream = True
    _, status, messages = await call(proxy, "tools/list", id=5)
    _, hit_status, hit = await call(proxy, "tools/list", id=6, accept="text/event-stream")

    assert [m.get("method") for m in messages] == ["notifications/progress", None]
    assert messages[1]["id"] == 5
    assert "hit" not in status and "hit" in hit_status
    assert [m["id"] for m in hit] == [6]  # the progress notification was not stored
    assert server.calls["tools/list"] == 1


# --- what is never stored --------------------------------------------------------------------


async def test_input_required_and_its_retry_are_never_stored(proxy, server):
    ask = {"uri": "file:///ask"}
    retry = {**ask, "inputResponses": {"q": {"answer": "yes"}}}
    _, _, interim = await call(proxy, "resources/read", ask)
    await call(proxy, "resources/read", ask)
    await call(proxy, "resources/read", retry)
    _, status, _ = await call(proxy, "resources/read", retry)

    assert interim["result"]["resultType"] == "input_required"
    assert "hit" not in status
    assert server.calls["resources/read"] == 4


async def test_tools_call_is_cached_only_for_allow_listed_tools_and_never_an_error(proxy, server):
    server.tools = ["list_agents", "run_agent"]
    for _ in range(2):
        await call(proxy, "tools/call", {"name": "run_agent", "arguments": {}})
    assert server.calls["tools/call"] == 2

    await call(proxy, "tools/call", {"name": "list_agents", "arguments": {}})
    _, status, _ = await call(proxy, "tools/call", {"name": "list_agents", "arguments": {}})
    _, bob, _ = await call(proxy, "tools/call", {"name": "list_agents", "arguments": {}}, token="b")
    assert "hit" in status and "hit" not in bob  # always per tenant
    assert server.calls["tools/call"] == 4

    failing = {"name": "list_agents", "arguments": {"fail": True}}
    await call(proxy, "tools/call", failing)
    _, status, _ = await call(proxy, "tools/call", failing)
    assert "hit" not in status
    assert server.calls["tools/call"] == 6


# --- keys: pages per cursor ------------------------------------------------------------------


async def test_each_page_is_its_own_entry_and_an_invalid_cursor_drops_them_all(proxy, server):
    _, _, first = await call(proxy, "tools/list")
    _, _, second = await call(proxy, "tools/list", {"cursor": "page2"})
    _, hit_one, _ = await call(proxy, "tools/list")
    _, hit_two, again = await call(proxy, "tools/list", {"cursor": "page2"})
    assert (first["result"]["page"], second["result"]["page"]) == (1, 2)
    assert "hit" in hit_one and "hit" in hit_two and again["result"]["page"] == 2
    assert server.calls["tools/list"] == 2

    _, _, error = await call(proxy, "tools/list", {"cursor": "gone"})
    _, after, _ = await call(proxy, "tools/list")

    assert error["error"]["code"] == -32602
    assert "hit" not in after
    assert server.calls["tools/list"] == 4


# --- invalidation by notification ------------------------------------------------------------


async def listen(proxy, server) -> tuple[Any, asyncio.Queue]:
    """Open a ``subscriptions/listen`` stream through the proxy; its messages go to a queue."""
    params = {"notifications": {"toolsListChanged": True}}
    body = mcp_body("subscriptions/listen", params, id=99)
    headers = headers_for("subscriptions/listen", None, "alice", "text/event-stream")
    response = await proxy.client.post("/mcp", json=body, headers=headers)
    queue: asyncio.Queue = asyncio.Queue()

    async def read() -> None:
        reader = EventReader()
        async for chunk in response.content.iter_any():
            for event in reader.feed(chunk):
                queue.put_nowait(json.loads(event.data))

    task = asyncio.ensure_future(read())
    ack = await asyncio.wait_for(queue.get(), 10)
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    return (response, task), queue


@pytest.mark.parametrize(
    ("notification", "params", "method", "call_params"),
    [
        ("notifications/tools/list_changed", {}, "tools/list", None),
        ("notifications/prompts/list_changed", {}, "prompts/list", None),
        ("notifications/resources/list_changed", {}, "resources/list", None),
        ("notifications/resources/list_changed", {}, "resources/templates/list", None),
        (
            "notifications/resources/updated",
            {"uri": "file:///a"},
            "resources/read",
            {"uri": "file:///a"},
        ),
    ],
)
async def test_a_notification_invalidates_its_entries(
    proxy, server, notification, params, method, call_params
):
    await call(proxy, method, call_params)
    _, cached, _ = await call(proxy, method, call_params)
    assert "hit" in cached
    (response, task), queue = await listen(proxy, server)

    server.notify(notification, params)
    received = await asyncio.wait_for(queue.get(), 10)  # relayed after the entries were dropped
    _, after, _ = await call(proxy, method, call_params)

    assert received["method"] == notification
    assert "hit" not in after
    assert server.calls[method] == 2
    task.cancel()
    response.close()


async def test_a_result_fetched_across_a_notification_is_not_stored(proxy, server):
    (response, task), queue = await listen(proxy, server)
    server.gate.clear()
    pending = asyncio.ensure_future(call(proxy, "tools/list"))
    await wait_until(lambda: _true(server.calls["tools/list"] == 1))

    server.notify("notifications/tools/list_changed")
    await asyncio.wait_for(queue.get(), 10)
    server.gate.set()
    _, first, _ = await asyncio.wait_for(pending, 10)
    _, second, _ = await call(proxy, "tools/list")

    assert "stored" not in first  # it may be the list from before the change
    assert "stored" in second
    task.cancel()
    response.close()


async def test_a_resource_update_leaves_other_resources_cached(proxy, server):
    await call(proxy, "resources/read", {"uri": "file:///a"})
    await call(proxy, "resources/read", {"uri": "file:///b"})
    (response, task), queue = await listen(proxy, server)

    server.notify("notifications/resources/updated", {"uri": "file:///a"})
    await asyncio.wait_for(queue.get(), 10)
    _, a, _ = await call(proxy, "resources/read", {"uri": "file:///a"})
    _, b, _ = await call(proxy, "resources/read", {"uri": "file:///b"})

    assert "hit" not in a and "hit" in b
    task.cancel()
    response.close()


async def test_the_admin_api_purges_by_method_and_by_uri(monkeypatch, proxy, server):
    monkeypatch.setenv("SIDECACHE_ADMIN_TOKEN", "mcp-token")
    auth = {"Authorization": "Bearer mcp-token"}
    await call(proxy, "tools/list")
    await call(proxy, "resources/read", {"uri": "file:///a"})

    purged = await proxy.admin.post("/purge", json={"tag": "mcp:method:tools/list"}, headers=auth)
    assert purged.status == 200
    purged = await proxy.admin.post("/purge", json={"tag": "mcp:resource:file:///a"}, headers=auth)
    assert purged.status == 200
    _, tools, _ = await call(proxy, "tools/list")
    _, read, _ = await call(proxy, "resources/read", {"uri": "file:///a"})

    assert "hit" not in tools and "hit" not in read


# --- refusal and coalescing ------------------------------------------------------------------


async def test_headers_that_disagree_with_the_body_are_refused_and_not_forwarded(proxy, server):
    headers = headers_for("tools/list", None, "alice", BOTH)
    headers["Mcp-Method"] = "tools/call"
    status, cache_status, answer = await call(proxy, "tools/list", id=9, headers=headers)

    assert status == 400
    assert answer["id"] == 9 and answer["error"]["code"] == -32020
    assert "header-mismatch" in cache_status
    assert server.calls["tools/list"] == 0


def flights(proxy):
    return proxy.client.server.runner.server.proxy._flights


async def _true(value: bool) -> bool:
    return value


async def test_concurrent_identical_calls_make_one_upstream_call(proxy, server):
    server.gate.clear()
    asked = [asyncio.ensure_future(call(proxy, "tools/list", id=i)) for i in range(4)]
    await wait_until(lambda: _true(flights(proxy).waiting == 4))
    server.gate.set()
    answers = await asyncio.gather(*asked)

    assert [message["id"] for _, _, message in answers] == [0, 1, 2, 3]
    assert sum("collapsed" in status for _, status, _ in answers) == 3
    assert server.calls["tools/list"] == 1


async def test_metrics_count_calls_per_mcp_method(proxy, server):
    await call(proxy, "tools/list")
    await call(proxy, "tools/list")
    metrics = await (await proxy.admin.get("/metrics")).text()

    hit = 'sidecache_mcp_calls_total{cache="hit",method="tools/list",route="mcp"} 1.0'
    assert hit in metrics


# --- earlier revisions: the official SDK's server behind sidecache, its client in front ------


class SdkServer:
    """The SDK's streamable-HTTP server under uvicorn on loopback, counting the JSON-RPC
    methods and the HTTP methods it receives."""

    def __init__(self) -> None:
        self.methods: Counter[str] = Counter()
        self.http: Counter[str] = Counter()
        self.mcp = MCPServer("agents")
        self.mcp.tool()(list_agents)
        self.mcp.tool()(self.add_tool)
        self.mcp.resource("help://refunds")(refunds)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self.url = ""

    async def add_tool(self, ctx: Context) -> str:
        """Add a tool and say so (a tools/list_changed notification)."""
        self.mcp.tool(name="new_tool")(list_agents)
        await ctx.session.send_tool_list_changed()
        return "added"

    async def start(self) -> None:
        app = self.mcp.streamable_http_app()

        async def counting(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            self.http[scope["method"]] += 1
            body = bytearray()

            async def read():
                message = await receive()
                if message["type"] != "http.request":
                    return message
                body.extend(message.get("body", b""))
                if not message.get("more_body") and body:
                    parsed = json.loads(body)
                    if isinstance(parsed, dict) and "method" in parsed:
                        self.methods[parsed["method"]] += 1
                return message

            return await app(scope, read, send)

        config = uvicorn.Config(counting, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.ensure_future(self._server.serve())
        await wait_until(lambda: _true(self._server.started))
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


def list_agents() -> list[str]:
    """The agents this service can route to."""
    return ["billing", "search"]


def refunds() -> str:
    return "Refunds take five days."


@pytest.fixture
async def sdk() -> AsyncIterator[SdkServer]:
    server = SdkServer()
    await server.start()
    yield server
    await server.stop()


async def sdk_proxy(make_proxy, sdk: SdkServer, legacy_ttl: str):
    route = {**MCP_ROUTE, "mcp": {"legacy_ttl": legacy_ttl}}
    return await make_proxy(upstream={"url": sdk.url}, routes=[route])


async def test_sdk_sessions_share_cached_lists_and_pass_the_rest(make_proxy, sdk):
    proxy = await sdk_proxy(make_proxy, sdk, "1m")
    url = str(proxy.client.make_url("/mcp"))
    async with Client(url, mode="legacy") as one:
        first = await one.list_tools()
        await one.call_tool("list_agents", {})
    async with Client(url, mode="legacy") as two:  # a new session, same tenant
        second = await two.list_tools()
        read = await two.read_resource("help://refunds")

    assert [tool.name for tool in second.tools] == [tool.name for tool in first.tools]
    assert read.contents[0].text == "Refunds take five days."
    assert sdk.methods["tools/list"] == 1
    assert sdk.methods["initialize"] == 2 and sdk.methods["tools/call"] == 1
    assert sdk.http["GET"] >= 1 and sdk.http["DELETE"] == 2  # passed through


async def test_sdk_lists_are_not_cached_unless_the_route_opts_in(make_proxy, sdk):
    proxy = await sdk_proxy(make_proxy, sdk, "0s")
    async with Client(str(proxy.client.make_url("/mcp")), mode="legacy") as client:
        await client.list_tools()
        await client.list_tools()

    assert sdk.methods["tools/list"] == 2


async def test_an_sdk_list_changed_notification_invalidates_the_cached_list(make_proxy, sdk):
    proxy = await sdk_proxy(make_proxy, sdk, "1m")
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if getattr(message, "method", "") == "notifications/tools/list_changed":
            changed.set()

    url = str(proxy.client.make_url("/mcp"))
    async with Client(url, mode="legacy", message_handler=on_message) as client:
        before = await client.list_tools()
        await client.call_tool("add_tool", {})
        await asyncio.wait_for(changed.wait(), 10)  # relayed after the list was dropped
        after = await client.list_tools()

    assert "new_tool" not in [tool.name for tool in before.tools]
    assert "new_tool" in [tool.name for tool in after.tools]
    assert sdk.methods["tools/list"] == 2
