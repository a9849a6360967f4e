"""The reference agent service's MCP endpoint (``examples/agent_service/mcp.py``): the
catalogue as tools, the help centre as resources, revision 2026-07-28 checked as a real server
checks it; and sidecache in front of it answering repeated lists and reads from cache."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from examples.agent_service import build_app
from examples.agent_service.catalogue import AGENTS
from examples.embedded import free_port
from tests.mcp_upstream import VERSION, mcp_body, mcp_headers

MCP_ROUTE = {"name": "mcp", "method": "*", "path": "/mcp", "mode": "mcp"}


@pytest.fixture
async def service() -> AsyncIterator[str]:
    """The real service, in process, on a loopback port (search in memory, no delay)."""
    runner = web.AppRunner(build_app(None, select_latency=0.0))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def post(
    url: str, body: Any, headers: dict[str, str], raw: bytes | None = None
) -> tuple[int, aiohttp.ClientResponse, Any]:
    """POST to ``url``/mcp: status, the response, and its JSON (``None`` when not JSON)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/mcp", data=raw if raw is not None else json.dumps(body), headers=headers
        ) as response,
    ):
        text = await response.text()
        message = json.loads(text) if response.content_type == "application/json" else text
        return response.status, response, message


async def call(url: str, method: str, params: dict[str, Any] | None = None, **extra: str) -> Any:
    """One well-formed call; its JSON-RPC message."""
    headers = {**mcp_headers(method, params), **extra}
    status, _, message = await post(url, mcp_body(method, params), headers)
    assert status == 200, message
    return message


async def stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_stats") as response:
        return await response.json()


async def test_lists_and_reads_carry_public_cache_hints(service) -> None:
    for method, ttl in (
        ("server/discover", 3_600_000),
        ("tools/list", 300_000),
        ("resources/list", 300_000),
        ("resources/templates/list", 300_000),
    ):
        result = (await call(service, method))["result"]
        assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == (
            "complete",
            ttl,
            "public",
        ), method
    read = await call(service, "resources/read", {"uri": "help://documents/7"})

    result = read["result"]
    assert (result["ttlMs"], result["cacheScope"]) == (600_000, "public")
    assert result["contents"][0]["uri"] == "help://documents/7"
    assert result["contents"][0]["text"].startswith("# ")


async def test_every_catalogue_agent_is_a_tool_with_an_input_schema(service) -> None:
    tools = (await call(service, "tools/list"))["result"]["tools"]

    assert [tool["name"] for tool in tools] == [agent.id for agent in AGENTS]
    assert all(tool["inputSchema"]["required"] == ["task"] for tool in tools)


async def test_resources_are_listed_a_page_at_a_time(service) -> None:
    first = (await call(service, "resources/list"))["result"]
    second = (await call(service, "resources/list", {"cursor": first["nextCursor"]}))["result"]

    assert len(first["resources"]) == 100
    assert first["resources"][0]["uri"] == "help://documents/1"
    assert second["resources"][0]["uri"] == "help://documents/101"
    bad = await call(service, "resources/list", {"cursor": "7"})
    assert bad["error"]["code"] == -32602


async def test_calling_an_agent_tool_ranks_the_catalogue_for_the_task(service) -> None:
    params = {"name": "shipping-tracker", "arguments": {"task": "where is my parcel delivery"}}

    result = (await call(service, "tools/call", params))["result"]

    assert result["isError"] is False
    assert result["structuredContent"]["agent"] == "shipping-tracker"
    assert result["structuredContent"]["rank"] == 1
    assert "ttlMs" not in result and "cacheScope" not in result  # a call is an action


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"name": "no-such-agent", "arguments": {"task": "x"}}, "protocol error"),
        ({"name": "translator", "arguments": {"task": "   "}}, "tool error"),
        ({"name": "translator", "arguments": {"task": "x", "extra": 1}}, "tool error"),
    ],
)
async def test_bad_tool_calls_are_errors_of_the_right_kind(service, params, expected) -> None:
    message = await call(service, "tools/call", params)

    if expected == "protocol error":
        assert message["error"]["code"] == -32602
    else:
        assert message["result"]["isError"] is True


async def test_reading_an_unknown_resource_is_invalid_params(service) -> None:
    for uri in ("help://documents/0", "help://documents/007", "help://documents/99999"):
        message = await call(service, "resources/read", {"uri": uri})
        assert message["error"]["code"] == -32602, uri
        assert message["error"]["data"] == {"uri": uri}


def _b64(text: str) -> str:
    return f"=?base64?{base64.b64encode(text.encode()).decode()}?="


READ = {"uri": "help://documents/3"}


@pytest.mark.parametrize(
    ("method", "changed_headers", "body_version", "status", "code"),
    [
        ("tools/list", {"MCP-Protocol-Version": None}, VERSION, 400, -32020),
        ("tools/list", {"MCP-Protocol-Version": "2025-11-25"}, "2025-11-25", 400, -32022),
        ("tools/list", {}, "2025-11-25", 400, -32020),
        ("tools/list", {"Mcp-Method": None}, VERSION, 400, -32020),
        ("tools/list", {"Mcp-Method": "resources/list"}, VERSION, 400, -32020),
        ("resources/read", {"Mcp-Name": None}, VERSION, 400, -32020),
        ("resources/read", {"Mcp-Name": "help://documents/4"}, VERSION, 400, -32020),
        ("resources/read", {"Mcp-Name": _b64("help://documents/3")}, VERSION, 200, None),
        ("prompts/list", {}, VERSION, 404, -32601),
    ],
    ids=[
        "version-header-missing",
        "version-unsupported",
        "version-header-and-body-differ",
        "method-header-missing",
        "method-header-differs",
        "name-header-missing",
        "name-header-differs",
        "name-header-base64-accepted",
        "method-not-found",
    ],
)
async def test_headers_are_checked_against_the_body(
    service, method, changed_headers, body_version, status, code
) -> None:
    params = READ if method == "resources/read" else None
    body = mcp_body(method, params)
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = body_version
    headers = {**mcp_headers(method, params), **changed_headers}

    answered, _, message = await post(
        service, body, {k: v for k, v in headers.items() if v is not None}
    )

    assert answered == status, message
    if code is not None:
        assert (message["id"], message["error"]["code"]) == (1, code)
    if code == -32022:
        assert message["error"]["data"]["supported"] == [VERSION]


async def test_malformed_bodies_and_foreign_origins_are_refused(service) -> None:
    status, _, message = await post(service, None, mcp_headers("tools/list"), raw=b"{not json")
    assert (status, message["error"]["code"]) == (400, -32700)

    batch = [mcp_body("tools/list")]
    status, _, message = await post(service, batch, mcp_headers("tools/list"))
    assert (status, message["error"]["code"]) == (400, -32600)

    foreign = {**mcp_headers("tools/list"), "Origin": "https://evil.example"}
    status, _, _ = await post(service, mcp_body("tools/list"), foreign)
    assert status == 403
    local = {**mcp_headers("tools/list"), "Origin": "http://localhost:3000"}
    status, _, _ = await post(service, mcp_body("tools/list"), local)
    assert status == 200


async def test_a_notification_is_accepted_without_an_answer(service) -> None:
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}

    status, response, _ = await post(service, notification, {})

    assert status == 202
    assert response.content_length == 0


async def test_a_client_accepting_only_event_streams_gets_one_event(service) -> None:
    headers = {**mcp_headers("tools/list"), "Accept": "text/event-stream"}

    status, response, text = await post(service, mcp_body("tools/list", id="a"), headers)

    assert status == 200
    assert response.content_type == "text/event-stream"
    event, data = text.strip().split("\n")
    assert event == "event: message"
    assert json.loads(data.removeprefix("data: "))["id"] == "a"


async def test_stats_count_mcp_calls_per_method(service) -> None:
    await call(service, "tools/list")
    await call(service, "tools/list")
    await call(service, "resources/read", READ)

    counted = await stats(service)

    assert counted["mcp"] == {"resources/read": 1, "tools/list": 2}
    assert counted["calls"]["POST /mcp"] == 3


async def test_sidecache_answers_repeated_lists_and_reads_from_cache(make_proxy, service) -> None:
    proxy = await make_proxy(upstream={"url": service}, routes=[MCP_ROUTE])
    tool = {"name": "translator", "arguments": {"task": "translate the release notes"}}
    statuses = []
    for tenant in ("acme", "globex"):
        for method, params in (
            ("tools/list", None),
            ("resources/read", READ),
            ("tools/call", tool),
        ):
            headers = {**mcp_headers(method, params), "Authorization": f"Bearer {tenant}"}
            response = await proxy.client.post(
                "/mcp", json=mcp_body(method, params), headers=headers
            )
            assert response.status == 200
            assert "result" in await response.json()
            statuses.append((tenant, method, response.headers["Cache-Status"]))

    counted = await stats(service)

    # Public lists and reads are shared across tenants; tool calls always reach the service.
    assert counted["mcp"] == {"resources/read": 1, "tools/call": 2, "tools/list": 1}
    assert [s for s in statuses if "hit" in s[2]] == [
        ("globex", "tools/list", "sidecache; hit; detail=l1"),
        ("globex", "resources/read", "sidecache; hit; detail=l1"),
    ]
