"""The ``/stats`` document: what the dashboard and operators read, derived from the
metrics already kept (nothing extra is counted on the request path)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from prometheus_client.samples import Sample

from proxy.runtime import Runtime

HIT_RESULTS = ("hit", "stale", "semantic")


def build_stats(runtime: Runtime) -> dict[str, Any]:
    runtime.refresh_gauges()
    families = runtime.metrics.families()
    durations = families.get("sidecache_request_duration_seconds", [])
    results = _counts(durations, "_count", ("route", "cache"))
    hits_by_tier = _counts(families.get("sidecache_cache_hits", []), "_total", ("route", "tier"))
    coalesced = _counts(families.get("sidecache_coalesced_requests", []), "_total", ("route",))
    routes: dict[str, dict[str, Any]] = {}
    for name in sorted({route for route, _ in results}):
        count = {result: results.get((name, result), 0) for result in _RESULTS}
        hits = count["hit"] + count["semantic"] + count["stale"]
        looked_up = hits + count["miss"]
        routes[name] = {
            "requests": sum(count.values()),
            "hits": hits,
            "misses": count["miss"],
            "stale": count["stale"],
            "bypass": count["bypass"] + count["pass"],
            "errors": count["error"],
            "hit_ratio": hits / looked_up if looked_up else 0.0,
            "upstream_calls_saved": hits + coalesced.get((name,), 0),
            "by_tier": {
                tier: hits_by_tier.get((name, tier), 0) for tier in ("l1", "l2", "semantic")
            },
        }
    return {
        "time": time.time(),
        "replica": runtime.bus.replica if runtime.bus is not None else None,
        "uptime_seconds": time.monotonic() - runtime.started_at,
        "requests_total": sum(route["requests"] for route in routes.values()),
        "routes": routes,
        "tiers": _tiers(runtime, families, hits_by_tier),
        "latency_ms": {
            "hit": _percentiles(durations, HIT_RESULTS),
            "miss": _percentiles(durations, ("miss",)),
        },
        "health": runtime.monitor.health() if runtime.monitor is not None else {},
    }


_RESULTS = ("hit", "stale", "semantic", "miss", "bypass", "pass", "error")


def _tiers(
    runtime: Runtime,
    families: dict[str, list[Sample]],
    hits_by_tier: dict[tuple[str, ...], float],
) -> dict[str, Any]:
    operations = _counts(
        families.get("sidecache_cache_operations", []), "_total", ("tier", "op", "result")
    )
    tiers: dict[str, Any] = {}
    for name, tier in (("l1", runtime.l1), ("l2", runtime.l2), ("semantic", runtime.semantic)):
        if tier is None:
            continue
        hits = sum(v for (_, t), v in hits_by_tier.items() if t == name)
        tiers[name] = {
            "available": bool(tier.available),
            "hits": hits,
            "misses": operations.get((name, "get", "miss"), 0),
        }
    if runtime.l1 is not None:
        tiers["l1"].update(entries=len(runtime.l1), bytes=runtime.l1.bytes)
    return tiers


def _counts(
    samples: list[Sample], suffix: str, labels: tuple[str, ...]
) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for sample in samples:
        if sample.name.endswith(suffix):
            out[tuple(sample.labels[name] for name in labels)] += sample.value
    return out


def _percentiles(samples: list[Sample], results: tuple[str, ...]) -> dict[str, float | None]:
    """p50 and p99 in milliseconds over every route, interpolated inside buckets."""
    buckets: dict[float, float] = defaultdict(float)
    for sample in samples:
        if sample.name.endswith("_bucket") and sample.labels["cache"] in results:
            buckets[float(sample.labels["le"])] += sample.value
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    return {f"p{int(q * 100)}": _quantile(bounds, buckets, total, q) for q in (0.5, 0.99)}


def _quantile(
    bounds: list[float], cumulative: dict[float, float], total: float, q: float
) -> float | None:
    if not total:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if bound == float("inf"):
                return round(lower * 1000, 3)
            share = (rank - below) / max(cumulative[bound] - below, 1e-9)
            return round((lower + (bound - lower) * share) * 1000, 3)
        lower, below = bound, cumulative[bound]
    return None
