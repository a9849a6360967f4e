"""System monitor: samples the process and host with psutil and computes a health score.

Every ``monitor.interval`` a background task reads

- CPU: the process (ratio of one core) and the host (ratio of all cores),
- memory: the process's resident bytes and the host's used bytes (total minus available),
- the process's open file descriptors and their soft limit,
- the used share of the filesystem holding ``monitor.disk_path``,
- the host's disk and network byte counters,

into the ``sidecache_system_*`` metrics, and reads from the request metrics, over the last
``monitor.window``, the **error rate** (failed upstream calls — unreachable, timed out or
answered 5xx — per request) and the **p99 latency** of requests on configured routes
(pass-through traffic, which may hold long streams, is left out).

Health score
------------
``score = 100 * E * L * R * T``, rounded to one decimal, where

- ``E = max(0, 1 - error_rate / (2 * thresholds.error_rate))``: 1 without errors, 0.5 at the
  error-rate threshold, 0 at twice it;
- ``L = min(1, latency_objective / p99)``: 1 while p99 meets the objective (or there was no
  traffic in the window), 0.5 at twice the objective;
- ``R`` = the lowest of the resource factors for host CPU, host memory, open fds (of the soft
  limit) and disk: each is 1 up to its threshold, then falls linearly to 0.5 at 100 %, so a busy
  host alone never takes the score below 50;
- ``T = 1 - 0.25 * unavailable / configured`` over the remote tiers (L2, semantic): a tier
  skipped by its circuit breaker degrades the service without breaking it (1 with none
  configured).

Alerts
------
Each sample checks the error rate, p99 (against the objective), host CPU, host memory, open
fds, disk, the score (alerting when it falls *below* ``thresholds.health_score``) and each
remote tier. Crossing a threshold logs one WARNING line with ``event: "alert"``,
``state: "firing"``; the line with ``state: "resolved"`` comes once the value is back past the
threshold by a 5 % margin, so a value hovering at the threshold does not flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from core.config import AlertThresholds, MonitorConfig
from core.metrics import Metrics

log = logging.getLogger("sidecache.monitor")

#: How far back past a threshold a value must come before its alert resolves.
HYSTERESIS = 0.05
#: Weight of the remote tiers in the score: all of them down costs this share.
TIER_WEIGHT = 0.25
#: The lowest a resource factor goes (at 100 % use).
RESOURCE_FLOOR = 0.5


@dataclass(frozen=True)
class Signals:
    """What the health score is computed from. Ratios are 0-1; ``p99`` in seconds, ``None``
    when no request was answered in the window."""

    error_rate: float = 0.0
    p99: float | None = None
    cpu: float = 0.0
    memory: float = 0.0
    open_fds: float = 0.0
    disk: float = 0.0
    tiers: Mapping[str, bool] = field(default_factory=dict)


def health_score(signals: Signals, objective: float, thresholds: AlertThresholds) -> float:
    """The 0-100 score documented in this module's docstring."""
    errors = max(0.0, 1.0 - signals.error_rate / (2 * thresholds.error_rate))
    latency = 1.0 if signals.p99 is None or signals.p99 <= objective else objective / signals.p99
    resources = min(
        _resource_factor(signals.cpu, thresholds.cpu),
        _resource_factor(signals.memory, thresholds.memory),
        _resource_factor(signals.open_fds, thresholds.open_fds),
        _resource_factor(signals.disk, thresholds.disk),
    )
    tiers = 1.0
    if signals.tiers:
        down = sum(1 for available in signals.tiers.values() if not available)
        tiers -= TIER_WEIGHT * down / len(signals.tiers)
    return round(100 * errors * latency * resources * tiers, 1)


def _resource_factor(used: float, threshold: float) -> float:
    if used <= threshold or threshold >= 1:
        return 1.0
    over = min(1.0, (used - threshold) / (1 - threshold))
    return 1.0 - (1.0 - RESOURCE_FLOOR) * over


@dataclass(frozen=True)
class Sample:
    """One reading of the system and of the traffic window, with the score it gave."""

    time: float
    process_cpu: float
    host_cpu: float
    process_memory_bytes: int
    host_memory_bytes: int
    host_memory_ratio: float
    open_fds: int
    max_fds: int | None
    disk_ratio: float
    requests: int
    error_rate: float
    p99_seconds: float | None
    tiers: dict[str, bool]
    score: float


@dataclass(frozen=True)
class _System:
    process_cpu: float
    host_cpu: float
    process_memory: int
    host_memory: int
    host_memory_ratio: float
    open_fds: int
    max_fds: int | None
    disk_ratio: float
    disk_read: int | None
    disk_written: int | None
    net_sent: int | None
    net_received: int | None


@dataclass(frozen=True)
class _Traffic:
    """Cumulative request counters at one moment."""

    at: float
    requests: float
    upstream_errors: float
    #: ``(upper bound, cumulative count)`` of the request-duration histogram, routed requests.
    buckets: tuple[tuple[float, float], ...]


class _Alert:
    """One alert condition; reports only its changes of state."""

    def __init__(self, name: str, threshold: float, *, below: bool = False) -> None:
        self.name = name
        self.threshold = threshold
        self.below = below
        self.firing = False

    def update(self, value: float) -> str | None:
        margin = HYSTERESIS * abs(self.threshold)
        if self.below:
            crossed = value < self.threshold
            recovered = value >= self.threshold + margin
        else:
            crossed = value > self.threshold
            recovered = value <= self.threshold - margin
        if not self.firing and crossed:
            self.firing = True
            return "firing"
        if self.firing and recovered:
            self.firing = False
            return "resolved"
        return None


class SystemMonitor:
    """Samples the system every ``config.interval`` into gauges and keeps the health score.

    ``tiers_available`` returns the configured remote tiers and whether each is in use.
    ``clock`` (monotonic seconds) measures the traffic window.
    """

    def __init__(
        self,
        config: MonitorConfig,
        metrics: Metrics,
        tiers_available: Callable[[], dict[str, bool]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._tiers_available = tiers_available
        self._clock = clock
        self._process = psutil.Process()
        self._window: deque[_Traffic] = deque()
        self._previous: _System | None = None
        self._task: asyncio.Task[None] | None = None
        self._last: Sample | None = None
        limits = config.thresholds
        self._alerts = {
            alert.name: alert
            for alert in (
                _Alert("error_rate", limits.error_rate),
                _Alert("latency_p99", config.latency_objective),
                _Alert("cpu", limits.cpu),
                _Alert("memory", limits.memory),
                _Alert("open_fds", limits.open_fds),
                _Alert("disk", limits.disk),
                _Alert("health_score", limits.health_score, below=True),
            )
        }
        # psutil measures CPU between two calls: this first one starts the count.
        self._process.cpu_percent()
        psutil.cpu_percent()

    @property
    def score(self) -> float:
        """The latest health score (100 before the first sample)."""
        return self._last.score if self._last is not None else 100.0

    @property
    def last(self) -> Sample | None:
        """The latest sample, or ``None`` before the first."""
        return self._last

    @property
    def firing(self) -> list[str]:
        """Names of the alerts firing now."""
        return [name for name, alert in self._alerts.items() if alert.firing]

    def health(self) -> dict[str, Any]:
        """The ``health`` part of ``/stats``: the score and what it was computed from."""
        if self._last is None:
            return {"score": self.score, "alerts": []}
        body = asdict(self._last)
        body["score"] = self._last.score
        body["latency_objective_seconds"] = self._config.latency_objective
        body["alerts"] = self.firing
        return body

    async def start(self) -> None:
        """Take a first sample at once, then one every interval in the background."""
        if self._task is not None:
            return
        await self.sample()
        self._task = asyncio.create_task(self._run(), name="sidecache-monitor")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def sample(self) -> Sample:
        """Read the system and the traffic window now, update the gauges, score and alerts."""
        system = await asyncio.to_thread(self._read_system)
        self._export(system)
        traffic = self._read_traffic()
        requests, error_rate, p99 = self._window_rates(traffic)
        tiers = dict(self._tiers_available())
        fds_ratio = system.open_fds / system.max_fds if system.max_fds else 0.0
        signals = Signals(
            error_rate=error_rate,
            p99=p99,
            cpu=system.host_cpu,
            memory=system.host_memory_ratio,
            open_fds=fds_ratio,
            disk=system.disk_ratio,
            tiers=tiers,
        )
        score = health_score(signals, self._config.latency_objective, self._config.thresholds)
        self._metrics.health_score.set(score)
        self._last = Sample(
            time=time.time(),
            process_cpu=system.process_cpu,
            host_cpu=system.host_cpu,
            process_memory_bytes=system.process_memory,
            host_memory_bytes=system.host_memory,
            host_memory_ratio=system.host_memory_ratio,
            open_fds=system.open_fds,
            max_fds=system.max_fds,
            disk_ratio=system.disk_ratio,
            requests=requests,
            error_rate=error_rate,
            p99_seconds=p99,
            tiers=tiers,
            score=score,
        )
        self._check_alerts(signals, score)
        return self._last

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.interval)
            try:
                await self.sample()
            except Exception:  # a failed reading must not end monitoring for good
                log.exception("system sample failed")

    # --- reading ------------------------------------------------------------------------------

    def _read_system(self) -> _System:
        """The psutil calls; run in a thread since a slow filesystem can block them."""
        process = self._process
        with process.oneshot():
            process_cpu = process.cpu_percent() / 100
            rss = process.memory_info().rss
            open_fds = process.num_fds() if hasattr(process, "num_fds") else 0
        soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        memory = psutil.virtual_memory()
        disk_io = psutil.disk_io_counters()
        net_io = psutil.net_io_counters()
        return _System(
            process_cpu=process_cpu,
            host_cpu=psutil.cpu_percent() / 100,
            process_memory=rss,
            host_memory=memory.total - memory.available,
            host_memory_ratio=(memory.total - memory.available) / memory.total,
            open_fds=open_fds,
            max_fds=None if soft_limit == resource.RLIM_INFINITY else soft_limit,
            disk_ratio=psutil.disk_usage(self._config.disk_path).percent / 100,
            disk_read=disk_io.read_bytes if disk_io else None,
            disk_written=disk_io.write_bytes if disk_io else None,
            net_sent=net_io.bytes_sent if net_io else None,
            net_received=net_io.bytes_recv if net_io else None,
        )

    def _export(self, system: _System) -> None:
        m = self._metrics
        m.system_cpu.labels("process").set(system.process_cpu)
        m.system_cpu.labels("host").set(system.host_cpu)
        m.system_memory.labels("process").set(system.process_memory)
        m.system_memory.labels("host").set(system.host_memory)
        m.system_open_fds.set(system.open_fds)
        if system.max_fds is not None:
            m.system_max_fds.set(system.max_fds)
        m.system_disk_usage.set(system.disk_ratio)
        previous, self._previous = self._previous, system
        if previous is None:
            # The first reading only sets the baseline: the counters count from here.
            for counter, label in (
                (m.system_disk_io, "read"),
                (m.system_disk_io, "write"),
                (m.system_network, "sent"),
                (m.system_network, "received"),
            ):
                counter.labels(label).inc(0)
            return
        for counter, label, now, before in (
            (m.system_disk_io, "read", system.disk_read, previous.disk_read),
            (m.system_disk_io, "write", system.disk_written, previous.disk_written),
            (m.system_network, "sent", system.net_sent, previous.net_sent),
            (m.system_network, "received", system.net_received, previous.net_received),
        ):
            # Host counters can wrap or reset (interfaces come and go): skip a negative step.
            if now is not None and before is not None and now >= before:
                counter.labels(label).inc(now - before)

    def _read_traffic(self) -> _Traffic:
        requests = 0.0
        buckets: dict[float, float] = {}
        families = self._metrics.families()
        for sample in families.get("sidecache_request_duration_seconds", []):
            if sample.name.endswith("_count"):
                requests += sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("cache") != "pass":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
        errors = sum(
            sample.value
            for sample in families.get("sidecache_upstream_errors", [])
            if sample.name.endswith("_total")
        )
        return _Traffic(self._clock(), requests, errors, tuple(sorted(buckets.items())))

    def _window_rates(self, now: _Traffic) -> tuple[int, float, float | None]:
        """Requests, error rate and p99 between ``now`` and the start of the window."""
        self._window.append(now)
        horizon = now.at - self._config.window
        # Keep the newest reading at or before the horizon as the window's baseline.
        while len(self._window) > 1 and self._window[1].at <= horizon:
            self._window.popleft()
        base = self._window[0]
        requests = now.requests - base.requests
        if requests <= 0:
            return 0, 0.0, None
        error_rate = min(1.0, max(0.0, now.upstream_errors - base.upstream_errors) / requests)
        before = dict(base.buckets)
        delta = [(bound, count - before.get(bound, 0.0)) for bound, count in now.buckets]
        return int(requests), error_rate, quantile(0.99, delta)

    # --- alerts -------------------------------------------------------------------------------

    def _check_alerts(self, signals: Signals, score: float) -> None:
        values = {
            "error_rate": signals.error_rate,
            "latency_p99": signals.p99 or 0.0,
            "cpu": signals.cpu,
            "memory": signals.memory,
            "open_fds": signals.open_fds,
            "disk": signals.disk,
            "health_score": score,
        }
        for tier, available in signals.tiers.items():
            name = f"tier_{tier}"
            if name not in self._alerts:
                self._alerts[name] = _Alert(name, 0.5)
            values[name] = 0.0 if available else 1.0
        for name, value in values.items():
            alert = self._alerts[name]
            state = alert.update(value)
            if state is not None:
                log.warning(
                    "alert %s: %s",
                    state,
                    name,
                    extra={
                        "event": "alert",
                        "alert": name,
                        "state": state,
                        "value": value,
                        "threshold": alert.threshold,
                        "score": score,
                    },
                )


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as sorted ``(upper bound, cumulative count)``
    pairs, interpolated linearly inside a bucket as Prometheus's ``histogram_quantile`` does.
    A rank in the ``+Inf`` bucket gives the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower
