"""MCP's caching rules (core/mcp.py), row by row, without sockets. Sections cited are of the
2026-07-28 specification: ``server/utilities/caching`` and ``basic/transports/streamable-http``."""

from __future__ import annotations

import base64
import json

import pytest

from core import mcp

POLICY = mcp.Policy(max_ttl=600.0)
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def body(method: str, params: dict | None = None, id: int | str = 1) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": id, "method": method, "params": {"_meta": META, **(params or {})}}
    ).encode()


def classify(method: str, params: dict | None = None, headers: dict | None = None, **kw):
    name = (params or {}).get("uri") or (params or {}).get("name")
    sent = modern_headers(method, name) if headers is None else headers
    return mcp.classify(sent, body(method, params, **kw), kw.get("policy", POLICY))


# --- classification: which requests may be cached -------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "cacheable"),
    [
        ("server/discover", {}, True),
        ("tools/list", {}, True),
        ("prompts/list", {}, True),
        ("resources/list", {"cursor": "p2"}, True),
        ("resources/templates/list", {}, True),
        ("resources/read", {"uri": "file:///a"}, True),
        # caching §"Cacheable Results": nothing else is on the list
        ("tools/call", {"name": "t", "arguments": {}}, False),
        ("prompts/get", {"name": "p"}, False),
        ("completion/complete", {}, False),
        ("subscriptions/listen", {}, False),
        # caching §"Cache Key": retries carrying inputResponses / requestState are never cached
        ("resources/read", {"uri": "file:///a", "inputResponses": {}}, False),
        ("tools/list", {"requestState": "abc"}, False),
    ],
)
def test_which_modern_requests_are_cacheable(method, params, cacheable):
    call = classify(method, params)
    assert isinstance(call, mcp.Call)
    assert (call.uncacheable is None) is cacheable


def test_tools_call_is_cacheable_only_when_the_tool_is_allow_listed():
    policy = mcp.Policy(max_ttl=600.0, cache_tools=("list_agents",), tool_ttl=60.0)
    sent = modern_headers("tools/call", "list_agents")
    allowed = mcp.classify(
        sent, body("tools/call", {"name": "list_agents", "arguments": {}}), policy
    )
    other = mcp.classify(
        modern_headers("tools/call", "run"),
        body("tools/call", {"name": "run", "arguments": {}}),
        policy,
    )
    assert allowed.uncacheable is None
    assert other.uncacheable == "tool not in cache_tools"


@pytest.mark.parametrize(
    ("version", "legacy_ttl", "method", "cacheable"),
    [
        ("2025-06-18", 0.0, "tools/list", False),  # earlier revisions: only when opted in
        ("2025-06-18", 60.0, "tools/list", True),
        ("2025-11-25", 60.0, "resources/templates/list", True),
        ("2025-03-26", 60.0, "resources/read", False),  # lists only
        ("2025-06-18", 60.0, "initialize", False),
        ("2024-11-05", 60.0, "tools/list", False),  # another transport
        ("2099-01-01", 60.0, "tools/list", False),  # unknown: default-deny
    ],
)
def test_earlier_revisions_cache_lists_only_when_the_route_opts_in(
    version, legacy_ttl, method, cacheable
):
    policy = mcp.Policy(max_ttl=600.0, legacy_ttl=legacy_ttl)
    raw = json.dumps({"jsonrpc": "2.0", "id": 3, "method": method, "params": {}}).encode()
    call = mcp.classify({"MCP-Protocol-Version": version}, raw, policy)
    assert call.version == version
    assert (call.uncacheable is None) is cacheable


def test_a_request_without_a_version_header_is_2025_03_26():
    raw = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    assert mcp.classify({}, raw, POLICY).version == "2025-03-26"


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]',  # a batch (2025-03-26)
        b'{"jsonrpc":"2.0","method":"notifications/initialized"}',  # a notification
        b'{"jsonrpc":"2.0","id":1,"result":{}}',  # a response
        b"not json",
        b'{"jsonrpc":"2.0","id":true,"method":"tools/list"}',
        b'{"id":1,"method":"tools/list"}',
        # A member named twice: servers differ on which one counts (the first could be a
        # tools/call whose result would be stored as the list): not classified at all.
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}',
        b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}',
        b'{"jsonrpc":"2.0","id":NaN,"method":"tools/list"}',
    ],
)
def test_anything_but_one_request_is_passed_on(raw):
    assert mcp.classify({}, raw, POLICY) is None


# --- header / body agreement (transport §"Server Validation") -------------------------------


@pytest.mark.parametrize(
    ("headers", "method", "params", "reason"),
    [
        (modern_headers("tools/call", "x"), "tools/list", {}, "Mcp-Method header"),
        ({"MCP-Protocol-Version": "2026-07-28"}, "tools/list", {}, "Mcp-Method header missing"),
        (modern_headers("resources/read"), "resources/read", {"uri": "a"}, "Mcp-Name header"),
        (modern_headers("resources/read", "b"), "resources/read", {"uri": "a"}, "params.uri"),
        (modern_headers("tools/call", "evil"), "tools/call", {"name": "ok"}, "params.name"),
        (
            {"MCP-Protocol-Version": "2025-11-25", "Mcp-Method": "tools/list"},
            "tools/list",
            {},
            "MCP-Protocol-Version",
        ),
        ({"Mcp-Method": "tools/list"}, "tools/list", {}, "MCP-Protocol-Version"),
    ],
)
def test_headers_that_disagree_with_the_body_are_refused(headers, method, params, reason):
    refused = mcp.classify(headers, body(method, params, id=7), POLICY)
    assert isinstance(refused, mcp.Refused)
    assert reason in refused.reason
    answer = json.loads(mcp.refusal(refused))
    assert answer["id"] == 7
    assert answer["error"]["code"] == mcp.HEADER_MISMATCH


def test_a_modern_version_header_needs_the_version_in_the_body():
    raw = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    refused = mcp.classify(modern_headers("tools/list"), raw, POLICY)
    assert isinstance(refused, mcp.Refused)


def test_a_base64_encoded_name_is_decoded_before_it_is_compared():
    uri = "file:///Grüße.txt"
    encoded = "=?base64?" + base64.b64encode(uri.encode()).decode() + "?="
    call = mcp.classify(
        modern_headers("resources/read", encoded), body("resources/read", {"uri": uri}), POLICY
    )
    assert isinstance(call, mcp.Call) and call.name == uri


def test_an_earlier_revision_may_omit_the_headers_but_not_contradict_them():
    raw = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    version = {"MCP-Protocol-Version": "2025-06-18"}
    assert isinstance(mcp.classify(version, raw, POLICY), mcp.Call)
    lying = {**version, "Mcp-Method": "tools/call"}
    assert isinstance(mcp.classify(lying, raw, POLICY), mcp.Refused)


# --- the key (caching §"Cache Key") ---------------------------------------------------------


def keyed(method: str, params: dict | None = None, extra: dict | None = None, **kw) -> bytes:
    name = (params or {}).get("uri")
    headers = {**modern_headers(method, name), **(extra or {})}
    return mcp.classify(headers, body(method, params, **kw), POLICY).keyed


def test_the_key_holds_the_method_and_the_result_affecting_params():
    assert keyed("tools/list") != keyed("prompts/list")
    assert keyed("tools/list", {"cursor": "a"}) != keyed("tools/list", {"cursor": "b"})
    assert keyed("tools/list", {"cursor": "a"}) != keyed("tools/list")
    a = keyed("resources/read", {"uri": "file:///a"})
    assert a != keyed("resources/read", {"uri": "file:///b"})


def test_the_key_leaves_out_the_id_and_request_scoped_meta():
    meta = {**META, "progressToken": 5, "io.modelcontextprotocol/clientInfo": {"name": "x"}}
    assert keyed("tools/list", id=1) == keyed("tools/list", id="other")
    assert keyed("tools/list", {"_meta": meta}) == keyed("tools/list")


def test_the_key_keeps_client_capabilities_and_unchecked_mcp_headers():
    caps = {**META, "io.modelcontextprotocol/clientCapabilities": {"extensions": {"x": {}}}}
    assert keyed("tools/list", {"_meta": caps}) != keyed("tools/list")
    assert keyed("tools/list", extra={"Mcp-Param-Region": "eu"}) != keyed("tools/list")


def test_the_session_id_never_keys_an_entry():
    raw = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    policy = mcp.Policy(max_ttl=60.0, legacy_ttl=60.0)
    one = mcp.classify({"MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": "a"}, raw, policy)
    two = mcp.classify({"MCP-Protocol-Version": "2025-06-18", "Mcp-Session-Id": "b"}, raw, policy)
    assert one.keyed == two.keyed


# --- what is stored, for how long, for whom -------------------------------------------------


def answer(result: dict, id: int | str = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id, "result": result}


TOOLS = {"tools": [], "resultType": "complete"}


@pytest.mark.parametrize(
    ("ttl_ms", "lifetime"),
    [
        (30_000, 30.0),
        (0, None),  # stale at once: not stored
        (-5, None),  # negative: treated as 0
        ("100", None),  # not an integer
        (True, None),
        (10_000_000, 600.0),  # capped by max_ttl
    ],
)
def test_ttl_ms_sets_the_lifetime_capped_by_max_ttl(ttl_ms, lifetime):
    verdict = mcp.judge(classify("tools/list"), POLICY, 200, answer({**TOOLS, "ttlMs": ttl_ms}))
    if lifetime is None:
        assert verdict == "stale at once"
    else:
        assert verdict.lifetime == lifetime


def test_an_absent_ttl_ms_is_stale_at_once():
    assert mcp.judge(classify("tools/list"), POLICY, 200, answer(TOOLS)) == "stale at once"


@pytest.mark.parametrize(
    ("scope", "stored_as"),
    [
        ("public", "public"),
        ("private", "private"),
        ("", "private"),  # the invalid scope some gateways emit: kept within the tenant
        (None, "private"),
        ("PUBLIC", "private"),
    ],
)
def test_cache_scope_decides_who_shares_the_result(scope, stored_as):
    result = {**TOOLS, "ttlMs": 1000, **({"cacheScope": scope} if scope is not None else {})}
    verdict = mcp.judge(classify("tools/list"), POLICY, 200, answer(result))
    assert verdict.scope == stored_as


def test_allow_listed_tools_and_earlier_revisions_are_always_private():
    policy = mcp.Policy(max_ttl=600.0, legacy_ttl=30.0, cache_tools=("t",), tool_ttl=60.0)
    tool = mcp.classify(
        modern_headers("tools/call", "t"), body("tools/call", {"name": "t"}), policy
    )
    verdict = mcp.judge(tool, policy, 200, answer({"content": [], "cacheScope": "public"}))
    assert (verdict.scope, verdict.lifetime) == ("private", 60.0)
    raw = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    legacy = mcp.classify({"MCP-Protocol-Version": "2025-06-18"}, raw, policy)
    verdict = mcp.judge(legacy, policy, 200, answer({"tools": [], "cacheScope": "public"}))
    assert (verdict.scope, verdict.lifetime) == ("private", 30.0)


@pytest.mark.parametrize(
    ("status", "message", "reason"),
    [
        (200, answer({"resultType": "input_required", "inputRequests": {}}), "interim result"),
        (200, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602}}, "not a result"),
        (200, answer({**TOOLS, "ttlMs": 1000}, id="1"), "answers another id"),
        (500, answer({**TOOLS, "ttlMs": 1000}), "status 500"),
        (200, answer([]), "result not an object"),
    ],
)
def test_what_is_never_stored(status, message, reason):
    assert mcp.judge(classify("tools/list"), POLICY, status, message) == reason


def test_a_tool_error_is_never_stored():
    policy = mcp.Policy(max_ttl=600.0, cache_tools=("t",), tool_ttl=60.0)
    call = mcp.classify(
        modern_headers("tools/call", "t"), body("tools/call", {"name": "t"}), policy
    )
    assert mcp.judge(call, policy, 200, answer({"content": [], "isError": True})) == "tool error"


def test_an_mrtr_retry_is_never_stored():
    call = classify("resources/read", {"uri": "u", "requestState": "s"})
    result = {"contents": [], "ttlMs": 1000, "cacheScope": "public"}
    assert mcp.judge(call, POLICY, 200, answer(result)) == "multi round-trip retry"


# --- answering with the requester's id ------------------------------------------------------


@pytest.mark.parametrize("request_id", [1, "1", 0, "", 2**70, "é"])
def test_a_hit_carries_the_requesters_id_with_its_json_type(request_id):
    rendered = json.loads(mcp.render(request_id, b'{"tools":[]}'))
    assert rendered == {"jsonrpc": "2.0", "id": request_id, "result": {"tools": []}}
    assert type(rendered["id"]) is type(request_id)


def test_a_hit_lowers_ttl_ms_to_the_freshness_left():
    rendered = json.loads(mcp.render(1, b'{"tools":[],"ttlMs":60000}', remaining=12.5))
    assert rendered["result"]["ttlMs"] == 12500


@pytest.mark.parametrize(
    ("accept", "stream"),
    [
        ("application/json, text/event-stream", False),
        ("text/event-stream", True),
        ("application/json", False),
        ("application/json;q=0, text/event-stream", True),
        ("*/*", False),
        (None, False),
        ("text/html", None),
    ],
)
def test_a_hit_is_answered_in_the_form_the_client_accepts(accept, stream):
    assert mcp.wants_event_stream(accept) is stream


# --- invalidation (caching §"Interaction with Notifications", §"Interaction with Pagination")


@pytest.mark.parametrize(
    ("method", "params", "tags"),
    [
        ("notifications/tools/list_changed", {}, ("mcp:method:tools/list",)),
        ("notifications/prompts/list_changed", {}, ("mcp:method:prompts/list",)),
        (
            "notifications/resources/list_changed",
            {},
            ("mcp:method:resources/list", "mcp:method:resources/templates/list"),
        ),
        ("notifications/resources/updated", {"uri": "file:///a"}, ("mcp:resource:file:///a",)),
        ("notifications/progress", {"progress": 1}, ()),
        ("notifications/message", {}, ()),
    ],
)
def test_each_notification_invalidates_its_entries(method, params, tags):
    assert mcp.invalidated_tags({"jsonrpc": "2.0", "method": method, "params": params}) == tags


def test_entries_carry_the_tags_notifications_name():
    read = classify("resources/read", {"uri": "file:///a"})
    assert read.tags == ("mcp:method:resources/read", "mcp:resource:file:///a")
    assert classify("tools/list").tags == ("mcp:method:tools/list",)


def test_an_error_for_a_cursor_drops_every_page_of_that_list():
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad cursor"}}
    paged = classify("tools/list", {"cursor": "stale"})
    assert mcp.invalid_cursor_tags(paged, error) == ("mcp:method:tools/list",)
    assert mcp.invalid_cursor_tags(classify("tools/list"), error) == ()
    ok = {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}
    assert mcp.invalid_cursor_tags(paged, ok) == ()


def test_the_final_response_of_a_stream_is_the_one_with_the_calls_id():
    call = classify("tools/list", id=4)
    assert mcp.final_response({"jsonrpc": "2.0", "id": 4, "result": {}}, call)
    assert not mcp.final_response({"jsonrpc": "2.0", "id": "4", "result": {}}, call)
    assert not mcp.final_response({"jsonrpc": "2.0", "method": "notifications/progress"}, call)


def test_metric_labels_stay_few():
    assert mcp.metric_method("tools/list") == "tools/list"
    assert mcp.metric_method("x/" + "y" * 50) == "other"
    assert mcp.metric_method(None) == "other"
