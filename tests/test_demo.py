"""``make demo`` keeps working: the workload is what it claims, and the demo runs end to end,
reports what MCP caching saved, and leaves no process behind."""

from __future__ import annotations

import json
import re
from collections import Counter

import psutil

from examples import demo
from examples.workload import TENANTS, build_workload


def test_workload_is_reproducible_and_mixes_routes_and_tenants() -> None:
    first = build_workload(400, seed=3)
    again = build_workload(400, seed=3)

    assert first == again
    assert {r.kind for r in first} == {"select", "search", "catalogue"}
    assert {r.tenant for r in first} == set(TENANTS)
    tasks = Counter(json.loads(r.body)["task"] for r in first if r.kind == "select")
    (_, most), *_, (_, least) = tasks.most_common()
    assert most >= 5 * least  # Zipf-like: the popular tasks dominate


def test_mcp_agent_runs_relist_tools_and_reread_documents() -> None:
    requests = build_workload(400, seed=3, mcp_share=0.2)

    mcp = [r for r in requests if r.kind == "mcp"]
    assert len(mcp) == 80
    assert {r.kind for r in requests} == {"select", "search", "catalogue", "mcp"}
    assert len({r.tenant for r in mcp}) > 1
    bodies = [json.loads(r.body) for r in mcp]
    for request, body in zip(mcp, bodies, strict=True):  # headers mirror the body
        assert request.headers["Mcp-Method"] == body["method"]
        version = body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"]
        assert request.headers["MCP-Protocol-Version"] == version
        named = body["params"].get("uri", body["params"].get("name"))
        assert request.headers.get("Mcp-Name") == named
    methods = Counter(body["method"] for body in bodies)
    assert methods["tools/list"] > 1
    reads = Counter(b["params"]["uri"] for b in bodies if b["method"] == "resources/read")
    assert reads.most_common(1)[0][1] > 1


def test_demo_reports_what_mcp_caching_saved_and_replicas_share_l2(capsys) -> None:
    # One request at a time: every repeated call finds the earlier one's answer stored.
    code = demo.main(["--requests", "80", "--replicas", "2", "--concurrency", "1"])

    out = capsys.readouterr().out
    assert code == 0
    row = re.search(r"^all MCP +(\d+) +(\d+) +(\d+) +(\d+)$", out, re.MULTILINE)
    assert row is not None, out
    sent, hits, direct, via_sidecache = map(int, row.groups())
    assert sent > 0 and direct == sent  # straight at the service, every call is served
    assert hits > 0
    assert via_sidecache == sent - hits  # counted by the service: each hit saved a call
    assert "MCP upstream calls saved" in out
    # Requests alternate between the replicas under one authority: a repeat that reaches
    # the other replica is answered from the entry the first one wrote to Redis.
    l2 = re.search(r"^L2 +(\d+) +(\d+) ", out, re.MULTILINE)
    assert l2 is not None, out
    assert int(l2.group(2)) > 0


def test_demo_replays_the_workload_and_stops_every_process(capsys) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    code = demo.main(["--requests", "60", "--replicas", "1", "--concurrency", "4"])

    out = capsys.readouterr().out
    assert code == 0
    assert "upstream calls saved" in out
    assert "L1" in out and "L2" in out
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left
