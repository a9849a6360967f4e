"""Every metric sidecache exports, defined once with its help text.

Labels come from small fixed sets: route names from the config, cache results, tiers,
reasons. Never a key or a path.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

#: Values of the ``cache`` label of request metrics.
CACHE_RESULTS = ("hit", "stale", "semantic", "miss", "bypass", "pass", "error")
#: Values of the ``tier`` label.
TIERS = ("l1", "l2", "semantic")

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_LATENCY_BOUNDS = (*_LATENCY_BUCKETS, math.inf)


class Metrics:
    """The metric objects of one sidecache process, registered in their own registry.

    With ``server.workers`` > 1 every worker process writes its values to files under
    ``PROMETHEUS_MULTIPROC_DIR`` and ``view()`` adds them up (gauges as their
    ``multiprocess_mode`` says), so ``/metrics`` and ``/stats`` show the whole server.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = registry if registry is not None else CollectorRegistry()
        #: Every request's updates, added once per turn of the event loop (see ``Tally``).
        self.tally = Tally()
        r = self.registry
        self.request_duration = Histogram(
            "sidecache_request_duration_seconds",
            "Time from request received to response sent, by route and cache result.",
            ["route", "cache"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "sidecache_upstream_duration_seconds",
            "Time until the upstream answered (response headers), by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "sidecache_upstream_errors_total",
            "Upstream requests that failed, by route and reason (unreachable, timeout, "
            "server_error: a 5xx answer).",
            ["route", "reason"],
            registry=r,
        )
        self.shed = Counter(
            "sidecache_shed_requests_total",
            "Requests answered 503 because no upstream slot freed up in time, by route.",
            ["route"],
            registry=r,
        )
        self.background_refreshes = Counter(
            "sidecache_background_refreshes_total",
            "Background refreshes (stale-while-revalidate, refresh-ahead) by route and result.",
            ["route", "result"],
            registry=r,
        )
        self.cache_hits = Counter(
            "sidecache_cache_hits_total",
            "Requests answered from cache (fresh or stale), by route and tier.",
            ["route", "tier"],
            registry=r,
        )
        self.cache_operations = Counter(
            "sidecache_cache_operations_total",
            "Cache tier operations by tier, operation (get, set, delete) and result.",
            ["tier", "op", "result"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "sidecache_cache_entries",
            "Entries held by a tier (tiers that can count them cheaply).",
            ["tier"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "sidecache_cache_bytes",
            "Bytes held by a tier (tiers that can count them cheaply).",
            ["tier"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.corrupt_entries = Counter(
            "sidecache_corrupt_entries_total",
            "Entries read back from a tier that did not parse and were dropped.",
            ["tier"],
            registry=r,
        )
        self.malformed_requests = Counter(
            "sidecache_malformed_requests_total",
            "Client requests refused as malformed (answered 400 or the connection closed).",
            registry=r,
        )
        self.connections_closed = Counter(
            "sidecache_connections_closed_total",
            "Client connections closed by sidecache: a bound was reached (header_timeout, "
            "idle_timeout, body_timeout, max_connections).",
            ["reason"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "sidecache_upstream_retries_total",
            "Upstream requests sent again on a fresh connection after a reused pooled one "
            "failed before any answer byte.",
            ["route"],
            registry=r,
        )
        self.coalesced = Counter(
            "sidecache_coalesced_requests_total",
            "Requests that waited for an identical in-flight upstream call instead of making one.",
            ["route"],
            registry=r,
        )
        self.mcp_calls = Counter(
            "sidecache_mcp_calls_total",
            "JSON-RPC calls on MCP routes by method (known MCP methods, else other) and cache "
            "result.",
            ["route", "method", "cache"],
            registry=r,
        )
        self.mcp_invalidations = Counter(
            "sidecache_mcp_invalidations_total",
            "Cached MCP results dropped for a server notification or an invalid cursor.",
            ["route", "reason"],
            registry=r,
        )
        self.llm_tokens_saved = Counter(
            "sidecache_llm_tokens_saved_total",
            "Model tokens not spent because a cached answer was given (from its stored usage), "
            "by route and type (prompt, completion).",
            ["route", "type"],
            registry=r,
        )
        self.llm_first_chunk = Histogram(
            "sidecache_llm_first_chunk_seconds",
            "Time from request to the first chunk of a streamed answer, by route and cache "
            "result (hit; miss: the request opened the upstream stream; joined: it joined an "
            "identical one under way).",
            ["route", "cache"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tier_available = Gauge(
            "sidecache_tier_available",
            "1 when a remote tier is in use, 0 while its circuit breaker skips it.",
            ["tier"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.semantic_embed_duration = Histogram(
            "sidecache_semantic_embedding_duration_seconds",
            "Time to embed a query text (memoised embeddings included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.semantic_lookup_duration = Histogram(
            "sidecache_semantic_lookup_duration_seconds",
            "Time of a semantic lookup: embed, nearest-neighbour query and guard.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.semantic_similarity = Histogram(
            "sidecache_semantic_similarity",
            "Cosine similarity of the nearest candidate, by outcome (hit, rejected).",
            ["outcome"],
            buckets=(0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0),
            registry=r,
        )
        self.semantic_decisions = Counter(
            "sidecache_semantic_decisions_total",
            "Semantic lookups by result (hit, miss, rejected) and reason of a rejection.",
            ["result", "reason"],
            registry=r,
        )
        self.system_cpu = Gauge(
            "sidecache_system_cpu_ratio",
            "CPU use as a ratio of one core (process) or of all cores (host).",
            ["scope"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.system_memory = Gauge(
            "sidecache_system_memory_bytes",
            "Resident memory of the process, or used memory of the host.",
            ["scope"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.health_score = Gauge(
            "sidecache_health_score",
            "Health score from 0 (bad) to 100 (good); see README for the formula.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.system_open_fds = Gauge(
            "sidecache_system_open_fds",
            "File descriptors the process holds open.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.system_max_fds = Gauge(
            "sidecache_system_max_fds",
            "Soft limit on the process's open file descriptors.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.system_disk_usage = Gauge(
            "sidecache_system_disk_usage_ratio",
            "Used share of the filesystem holding monitor.disk_path.",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.system_disk_io = Counter(
            "sidecache_system_disk_io_bytes_total",
            "Bytes the host read from or wrote to disk since the monitor started, by direction.",
            ["direction"],
            registry=r,
        )
        self.system_network = Counter(
            "sidecache_system_network_bytes_total",
            "Bytes the host sent or received on its network interfaces since the monitor "
            "started, by direction.",
            ["direction"],
            registry=r,
        )

    def view(self) -> CollectorRegistry:
        """The registry to expose: this process's, or every worker's added up."""
        self.tally.flush()
        if not self.multiprocess:
            return self.registry
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return combined

    def families(self) -> dict[str, list[Sample]]:
        """Every metric family's samples by family name (counters without ``_total``), over
        all workers: what ``/stats`` and the health score read."""
        return {family.name: family.samples for family in self.view().collect()}

    def tier_changed(self, tier: str, available: bool) -> None:
        """Circuit-breaker callback: record a tier going out of or back into service."""
        self.tier_available.labels(tier).set(1 if available else 0)


class Tally:
    """The metric updates every request makes, gathered in plain numbers and added at the
    end of the event loop's turn they were made in (and before the metrics are read:
    ``Metrics.view``).

    prometheus_client takes a lock per increment, and a histogram observation scans its
    buckets and takes two; at tens of thousands of requests a second on one core that was a
    fifth of an L1 hit's cost. Here an update is a dictionary addition, and the turn's
    updates reach each labelled child once. Outside a running loop they are added at once."""

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._durations: dict[Any, Durations] = {}
        self._due = False

    def count(self, counter: Any, amount: float = 1) -> None:
        """``counter.inc(amount)`` by the end of the turn (``counter``: a labelled child)."""
        self._counts[counter] = self._counts.get(counter, 0) + amount
        if not self._due:
            self._schedule()

    def observe(self, histogram: Any, seconds: float) -> None:
        """``histogram.observe(seconds)`` by the end of the turn (``histogram``: a labelled
        child of a histogram with the latency buckets)."""
        durations = self._durations.get(histogram)
        if durations is None:
            durations = self._durations[histogram] = Durations()
        durations.observe(seconds)
        if not self._due:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._due = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Add everything gathered so far."""
        self._due = False
        counts, self._counts = self._counts, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for histogram, durations in self._durations.items():
            if durations.count:
                durations.add_to(histogram)


class Durations:
    """Observations bound for one child of a latency histogram, kept in plain numbers and
    added to it in one go (``add_to``): per observation a bisect and two additions, not the
    bucket scan and two locked increments of prometheus_client's ``observe``."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.counts = [0] * len(_LATENCY_BOUNDS)

    def observe(self, seconds: float) -> None:
        # The first bucket whose bound is >= seconds, as ``Histogram.observe`` picks it.
        self.counts[bisect_left(_LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def add_to(self, child: Histogram) -> None:
        """Add what was observed to ``child`` (a labelled child of a histogram with the
        latency buckets) and start again from nothing."""
        # prometheus_client has no bulk observe. Its children keep the sum and one value per
        # bucket (not cumulative) in ``_sum`` and ``_buckets``, as ``observe`` updates them;
        # tests/test_metrics.py checks that both ways give the same exposition.
        child._sum.inc(self.total)  # type: ignore[attr-defined]
        for bucket, count in zip(child._buckets, self.counts, strict=True):  # type: ignore[attr-defined]
            if count:
                bucket.inc(count)
        self.count = 0
        self.total = 0.0
        self.counts = [0] * len(_LATENCY_BOUNDS)
