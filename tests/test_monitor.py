"""The system monitor: gauges from psutil, the health score and its alerts."""

from __future__ import annotations

import json
import logging

import pytest

from core.config import AlertThresholds, MonitorConfig
from core.logs import JsonFormatter
from core.metrics import Metrics
from core.monitor import Signals, SystemMonitor, health_score, quantile

#: Thresholds that keep host resources out of the score, so a busy test machine cannot move it.
NO_RESOURCE_LIMITS = {"cpu": 1.0, "memory": 1.0, "open_fds": 1.0, "disk": 1.0}
LIMITS = AlertThresholds()


class Clock:
    """A hand-moved monotonic clock for the traffic window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alert_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.alert, r.state) for r in caplog.records if getattr(r, "event", None) == "alert"]


def monitor_config(**overrides) -> MonitorConfig:
    thresholds = AlertThresholds(**{**NO_RESOURCE_LIMITS, **overrides.pop("thresholds", {})})
    return MonitorConfig(interval=3600, thresholds=thresholds, **overrides)


# --- gauges -----------------------------------------------------------------------------------


async def test_a_sample_sets_the_system_gauges():
    metrics = Metrics()
    monitor = SystemMonitor(MonitorConfig(), metrics, dict)

    await monitor.sample()
    sample = await monitor.sample()

    value = metrics.registry.get_sample_value
    assert value("sidecache_system_cpu_ratio", {"scope": "process"}) >= 0
    assert value("sidecache_system_cpu_ratio", {"scope": "host"}) >= 0
    assert value("sidecache_system_memory_bytes", {"scope": "process"}) > 0
    assert value("sidecache_system_memory_bytes", {"scope": "host"}) > 0
    assert value("sidecache_system_open_fds") > 0
    assert value("sidecache_system_max_fds") >= value("sidecache_system_open_fds")
    assert 0 < value("sidecache_system_disk_usage_ratio") <= 1
    assert value("sidecache_system_disk_io_bytes_total", {"direction": "read"}) >= 0
    assert value("sidecache_system_network_bytes_total", {"direction": "received"}) >= 0
    assert value("sidecache_health_score") == sample.score == monitor.score


async def test_runtime_starts_the_monitor_and_metrics_show_it(make_proxy):
    proxy = await make_proxy()

    metrics = await (await proxy.admin.get("/metrics")).text()

    assert proxy.runtime.monitor.last is not None
    assert 'sidecache_system_cpu_ratio{scope="process"}' in metrics
    assert "sidecache_health_score " in metrics
    assert proxy.runtime.monitor.health()["score"] == proxy.runtime.monitor.score


async def test_monitor_disabled_in_config_is_not_built(make_proxy):
    proxy = await make_proxy(monitor={"enabled": False})

    assert proxy.runtime.monitor is None


# --- the score --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signals", "score"),
    [
        (Signals(), 100.0),
        (Signals(error_rate=0.05), 50.0),  # at the error-rate threshold
        (Signals(error_rate=0.10), 0.0),  # at twice it
        (Signals(p99=1.0), 50.0),  # twice the 500 ms objective
        (Signals(p99=0.4), 100.0),  # within it
        (Signals(tiers={"l2": False}), 75.0),
        (Signals(tiers={"l2": False, "semantic": True}), 87.5),
        (Signals(cpu=1.0), 50.0),  # a saturated host halves the score, no more
        (Signals(cpu=0.95), 75.0),  # half way from the 0.9 threshold to 100 %
        (Signals(memory=0.5, disk=0.85), 100.0),  # under their thresholds
        (Signals(error_rate=0.05, p99=1.0), 25.0),  # factors multiply
    ],
)
def test_health_score_formula(signals, score):
    assert health_score(signals, objective=0.5, thresholds=LIMITS) == score


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]

    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == pytest.approx(0.198)
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # +Inf: highest bound


async def test_upstream_errors_in_the_window_lower_the_score(make_proxy, upstream):
    proxy = await make_proxy(monitor={"enabled": False})
    monitor = SystemMonitor(monitor_config(), proxy.runtime.metrics, dict, clock=Clock())
    await monitor.sample()
    await upstream.stop()

    for i in range(4):
        response = await proxy.client.post("/agents/select", json={"task": i})
        assert response.status == 502
    sample = await monitor.sample()

    assert sample.requests == 4
    assert sample.error_rate == 1.0
    assert sample.score == 0.0


async def test_slow_answers_lower_the_score_against_the_latency_objective(make_proxy, upstream):
    proxy = await make_proxy(monitor={"enabled": False})
    config = monitor_config(latency_objective=0.01)
    monitor = SystemMonitor(config, proxy.runtime.metrics, dict, clock=Clock())
    await monitor.sample()
    upstream.delay = 0.06

    for i in range(3):
        await proxy.client.post("/agents/select", json={"task": i})
    sample = await monitor.sample()

    # Every request took 60-100 ms: p99 lands in the 50-100 ms bucket.
    assert 0.05 < sample.p99_seconds <= 0.1
    assert sample.score == round(100 * 0.01 / sample.p99_seconds, 1)


# --- alerts -----------------------------------------------------------------------------------


async def test_one_alert_line_on_crossing_and_one_on_recovery(make_proxy, upstream, caplog):
    caplog.set_level(logging.WARNING, logger="sidecache.monitor")
    proxy = await make_proxy(monitor={"enabled": False})
    clock = Clock()
    monitor = SystemMonitor(monitor_config(window=60), proxy.runtime.metrics, dict, clock=clock)
    await monitor.sample()
    await upstream.stop()

    for step in range(3):  # failing for a while: alerts fire once
        await proxy.client.post("/agents/select", json={"task": step})
        clock.now += 1
        await monitor.sample()
    firing = alert_lines(caplog)
    await upstream.start()  # same port
    for step in range(5):
        response = await proxy.client.post("/agents/select", json={"task": f"ok-{step}"})
        assert response.status == 200
    clock.now += 120  # the failures leave the window
    await monitor.sample()
    clock.now += 1
    await monitor.sample()

    assert firing == [("error_rate", "firing"), ("health_score", "firing")]
    assert alert_lines(caplog) == [
        ("error_rate", "firing"),
        ("health_score", "firing"),
        ("error_rate", "resolved"),
        ("health_score", "resolved"),
    ]
    assert monitor.firing == []


async def test_alert_line_is_structured_json(caplog):
    caplog.set_level(logging.WARNING, logger="sidecache.monitor")
    available = {"l2": True}
    monitor = SystemMonitor(monitor_config(), Metrics(), lambda: dict(available))
    await monitor.sample()

    available["l2"] = False
    await monitor.sample()
    await monitor.sample()

    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "alert"]
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "sidecache.monitor"
    assert line["alert"] == "tier_l2" and line["state"] == "firing"
    assert line["score"] == 75.0
    assert monitor.health()["alerts"] == ["tier_l2"]


async def test_a_value_hovering_at_the_threshold_does_not_flood(caplog):
    caplog.set_level(logging.WARNING, logger="sidecache.monitor")
    metrics = Metrics()
    clock = Clock()
    monitor = SystemMonitor(monitor_config(window=1), metrics, dict, clock=clock)
    await monitor.sample()
    errors = metrics.upstream_errors.labels("select", "timeout")
    requests = metrics.request_duration.labels("select", "miss")

    # Error rate alternates 5.5 % / 4.9 % around the 5 % threshold, inside the 5 % margin.
    for failed, total in ((11, 200), (49, 1000), (11, 200), (49, 1000), (11, 200)):
        errors.inc(failed)
        for _ in range(total):
            requests.observe(0.001)
        clock.now += 2
        await monitor.sample()

    assert [a for a in alert_lines(caplog) if a[0] == "error_rate"] == [("error_rate", "firing")]
