"""The admin port: Prometheus metrics, liveness, readiness, stats."""

from prometheus_client.parser import text_string_to_metric_families


async def _scrape(proxy) -> dict[str, list]:
    response = await proxy.admin.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(await response.text())
    return {family.name: family.samples for family in families}


def _value(samples, name: str, **labels) -> float:
    matching = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert matching, f"no sample {name} {labels}"
    return sum(matching)


async def test_metrics_parse_and_show_requests_by_route_and_cache_result(
    make_proxy, upstream, redis_url
):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    for _ in range(3):
        await proxy.client.post("/agents/select", json={"task": "metrics"})
    await proxy.client.get("/not-cached")
    await proxy.runtime.cache.flush()

    metrics = await _scrape(proxy)

    duration = metrics["sidecache_request_duration_seconds"]
    count = "sidecache_request_duration_seconds_count"
    assert _value(duration, count, route="select", cache="miss") == 1
    assert _value(duration, count, route="select", cache="hit") == 2
    assert _value(duration, count, route="none", cache="pass") == 1
    assert (
        _value(duration, "sidecache_request_duration_seconds_bucket", route="select", le="+Inf")
        == 3
    )
    upstream_duration = metrics["sidecache_upstream_duration_seconds"]
    assert (
        _value(upstream_duration, "sidecache_upstream_duration_seconds_count", route="select") == 1
    )
    operations = metrics["sidecache_cache_operations"]
    total = "sidecache_cache_operations_total"
    assert _value(operations, total, tier="l1", op="get", result="hit") == 2
    assert _value(operations, total, tier="l2", op="get", result="miss") == 1
    assert _value(operations, total, tier="l2", op="set", result="ok") == 1
    assert _value(metrics["sidecache_cache_entries"], "sidecache_cache_entries", tier="l1") == 1
    assert _value(metrics["sidecache_cache_bytes"], "sidecache_cache_bytes", tier="l1") > 0
    assert _value(metrics["sidecache_tier_available"], "sidecache_tier_available", tier="l2") == 1


async def test_metrics_count_coalesced_requests_and_upstream_errors(make_proxy, upstream):
    import asyncio

    upstream.delay = 0.2
    proxy = await make_proxy()
    await asyncio.gather(*(proxy.client.post("/agents/select", json={}) for _ in range(5)))
    await upstream.stop()
    await proxy.client.post("/agents/select", json={"task": "down"})

    metrics = await _scrape(proxy)

    coalesced = metrics["sidecache_coalesced_requests"]
    assert _value(coalesced, "sidecache_coalesced_requests_total", route="select") == 4
    errors = metrics["sidecache_upstream_errors"]
    assert _value(errors, "sidecache_upstream_errors_total", reason="unreachable") == 1


async def test_healthz_answers_while_the_process_lives(make_proxy, upstream):
    proxy = await make_proxy()
    await upstream.stop()
    response = await proxy.admin.get("/healthz")
    assert response.status == 200


async def test_readyz_follows_the_upstream_and_details_each_tier(make_proxy, upstream):
    proxy = await make_proxy()
    ready = await proxy.admin.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["tiers"] == {"l1": "ok", "l2": "disabled", "semantic": "disabled"}
    await upstream.stop()
    not_ready = await proxy.admin.get("/readyz")
    assert not_ready.status == 503
    assert (await not_ready.json())["upstream"] == "unreachable"


async def test_readyz_reports_an_l2_outage_without_failing(make_proxy, upstream, redis_server):
    proxy = await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": redis_server.url}})
    redis_server.kill()
    for _ in range(5):
        await proxy.client.post("/agents/select", json={"task": "x"})
    response = await proxy.admin.get("/readyz")
    assert response.status == 200
    assert (await response.json())["tiers"]["l2"] == "unavailable"


async def test_an_upstream_5xx_answer_counts_as_an_upstream_error(make_proxy, upstream):
    from tests.upstream import Canned

    upstream.canned["/agents/select"] = Canned(503, {}, b'{"error": "busy"}')
    proxy = await make_proxy()
    response = await proxy.client.post("/agents/select", json={"task": "x"})
    assert response.status == 503
    metrics = await _scrape(proxy)
    errors = metrics["sidecache_upstream_errors"]
    assert _value(errors, "sidecache_upstream_errors_total", reason="server_error") == 1
