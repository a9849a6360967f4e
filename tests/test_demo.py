"""``make demo`` keeps working: the workload is what it claims, and the demo runs end to end
and leaves no process behind."""

from __future__ import annotations

import json
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


def test_demo_replays_the_workload_and_stops_every_process(capsys) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    code = demo.main(["--requests", "60", "--replicas", "1", "--concurrency", "4"])

    out = capsys.readouterr().out
    assert code == 0
    assert "upstream calls saved" in out
    assert "L1" in out and "L2" in out
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left
