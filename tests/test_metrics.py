"""The tally of per-request metric updates (``core.metrics.Tally``): added at the end of
the loop's turn or before a read, and, for durations, in bulk exactly as the same
observations made one by one."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest

from core.metrics import Durations, Metrics

#: On a bucket bound, between bounds, zero, and past the last bound (the +Inf bucket).
SECONDS = [0.0, 0.0005, 0.0004, 0.0005001, 0.003, 0.01, 0.7, 10.0, 12.5, 1e-9]


def exposition(metrics: Metrics) -> list[bytes]:
    """The exposition but for the ``_created`` lines (when each child was made)."""
    lines = generate_latest(metrics.registry).splitlines()
    return [line for line in lines if b"_created" not in line]


@pytest.mark.parametrize("seconds", [SECONDS, [], [0.02] * 1000])
def test_bulk_durations_read_as_observations_one_by_one(seconds):
    one_by_one, bulk = Metrics(), Metrics()
    child = one_by_one.request_duration.labels("select", "hit")
    for value in seconds:
        child.observe(value)
    durations = Durations()
    for value in seconds:
        durations.observe(value)
    assert durations.count == len(seconds)
    durations.add_to(bulk.request_duration.labels("select", "hit"))
    assert exposition(bulk) == exposition(one_by_one)


def test_durations_start_again_from_nothing_once_added():
    metrics = Metrics()
    child = metrics.request_duration.labels("select", "hit")
    durations = Durations()
    durations.observe(0.001)
    durations.add_to(child)
    durations.add_to(child)  # nothing new: nothing added twice
    assert durations.count == 0
    samples = {s.name: s.value for s in metrics.request_duration.collect()[0].samples}
    assert samples["sidecache_request_duration_seconds_count"] == 1
    assert samples["sidecache_request_duration_seconds_sum"] == pytest.approx(0.001)


async def test_the_tally_adds_a_turns_updates_at_its_end_or_when_the_metrics_are_read():
    metrics = Metrics()
    hits = metrics.cache_hits.labels("select", "l1")
    timer = metrics.request_duration.labels("select", "hit")
    for _ in range(3):
        metrics.tally.count(hits)
        metrics.tally.observe(timer, 0.001)
    assert hits._value.get() == 0  # not yet: the turn goes on
    await asyncio.sleep(0)  # the turn ends
    assert hits._value.get() == 3
    metrics.tally.count(hits)
    families = metrics.families()  # a read adds what is pending first
    assert [s.value for s in families["sidecache_cache_hits"] if s.name.endswith("_total")] == [4]
    samples = {s.name: s.value for s in families["sidecache_request_duration_seconds"]}
    assert samples["sidecache_request_duration_seconds_count"] == 3


def test_outside_a_running_loop_the_tally_adds_at_once():
    metrics = Metrics()
    hits = metrics.cache_hits.labels("select", "l1")
    metrics.tally.count(hits, 2)
    assert hits._value.get() == 2
