"""``python -m examples.demo``: what sidecache does to realistic agent traffic, in a minute.

Starts embedded Redis and PostgreSQL (+ pgvector), the reference agent service, and
sidecache in front of it (two replicas sharing Redis, like two pods of one deployment; the
client alternates between them), all on loopback ports. Then it replays one workload
(``examples.workload``: Zipf-popular agent-selection tasks, paraphrased searches, agents on
the service's MCP endpoint re-listing its tools and re-reading its documents, four tenants)
twice with the same concurrency, once straight at the service and once through sidecache,
and prints requests, hit ratio per cache tier (from the replicas' ``/metrics``), upstream
calls saved (from the service's ``/_stats``), p50/p99 latency of both runs, and per MCP
method the calls sent, answered from cache and served by the service in each run.

``--keep`` leaves everything running afterwards and prints where ``/metrics``, ``/stats`` and
the dashboard are, until Ctrl-C. Every process the demo started is stopped when it exits,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from core import config as sidecache_config
from examples.embedded import PostgresServer, RedisServer
from examples.processes import AgentService, Sidecache, http_ok, stopping_on_sigterm
from examples.workload import MCP_SHARE, Request, build_workload, summary

#: Simulated compute time of one agent selection in the reference service (an LLM call).
SELECT_LATENCY = 0.05
#: Longest a replay may take before it is abandoned.
PHASE_TIMEOUT = 120.0
#: The authority clients use for the service, as they would a Kubernetes Service's name:
#: the replicas listen on ports of their own here, yet are one service to their clients (the
#: key covers the authority, so replicas share entries only when reached under one).
SERVICE_AUTHORITY = "agent-service"
REQUEST_TIMEOUT = 30.0


# --- the world ----------------------------------------------------------------------------------


@dataclass
class World:
    """Everything the demo started."""

    redis: RedisServer
    postgres: PostgresServer
    service: AgentService
    replicas: list[Sidecache]
    semantic: bool


def has_option(section: type, name: str) -> bool:
    """Whether a config section (a dataclass of ``core.config``) has the option ``name``."""
    return name in {f.name for f in dataclasses.fields(section)}


def semantic_supported() -> bool:
    """Whether this sidecache build has the semantic tier's configuration."""
    return (
        hasattr(sidecache_config, "SemanticStoreConfig")
        and has_option(sidecache_config.CacheConfig, "semantic")
        and has_option(sidecache_config.RouteConfig, "semantic")
    )


def demo_config(upstream: str, redis_url: str, pg_dsn: str, semantic: bool) -> dict:
    """The sidecache config the demo runs with: the shipped routes, L1 + Redis (+ semantic)."""
    select = {
        "name": "agents-select",
        "method": "POST",
        "path": "/agents/select",
        "ttl": "5m",
        "ignore_fields": ["request_id"],
    }
    search = {
        "name": "search",
        "method": "POST",
        "path": "/search",
        "ttl": "1h",
        "ignore_fields": ["request_id"],
    }
    # MCP's own rules: a result is kept as its ttlMs says (an hour at most), shared across
    # tenants when the service marks it public; tool calls pass through.
    mcp = {"name": "mcp", "method": "*", "path": "/mcp", "mode": "mcp"}
    cache: dict = {"l1": {"max_entries": 10_000, "max_bytes": "64MiB"}, "l2": {"url": redis_url}}
    if semantic:
        search["semantic"] = {"field": "query"}
        cache["semantic"] = {"dsn": pg_dsn}
    server = {"host": "127.0.0.1", "admin_host": "127.0.0.1"}
    if has_option(sidecache_config.ServerConfig, "drain_delay"):
        server["drain_delay"] = "0s"  # no load balancer to drain from: stop at once
    return {
        "server": server,
        "upstream": {"url": upstream},
        "cache": cache,
        "routes": [select, search, mcp],
        "logging": {"level": "WARNING"},
    }


def _started(name: str, start: Callable[[], object]) -> None:
    began = time.perf_counter()
    status(f"starting {name} ...")
    start()
    status(f"starting {name} ... ready in {time.perf_counter() - began:.1f}s", done=True)


def start_world(stack: contextlib.ExitStack, workdir: Path, replicas: int) -> World:
    """Start every process; each is registered on ``stack`` to be stopped in reverse order."""
    redis = stack.enter_context(RedisServer(start_timeout=20))
    status(f"embedded Redis on {redis.url}", done=True)
    postgres = PostgresServer()
    stack.callback(postgres.close)
    _started("embedded PostgreSQL + pgvector", postgres.start)

    service = AgentService(postgres.dsn, select_latency=SELECT_LATENCY)
    stack.callback(service.close)
    _started(f"reference agent service on {service.url}", _or_log(service))

    semantic = semantic_supported()
    config = demo_config(service.url, redis.url, postgres.dsn, semantic)
    sidecache_config.config_from_dict(config)  # fail here, clearly, if the schema moved on
    config_path = workdir / "sidecache.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    started = []
    for n in range(replicas):
        replica = Sidecache(config_path, service.url)
        stack.callback(replica.close)
        _started(f"sidecache replica {n + 1} on {replica.url}", _or_log(replica))
        started.append(replica)
    return World(redis, postgres, service, started, semantic)


def _or_log(child: AgentService | Sidecache) -> Callable[[], object]:
    """``child.start`` that shows the child's log when it fails to come up."""

    def start() -> object:
        try:
            return child.start()
        except (RuntimeError, TimeoutError):
            print(f"\n--- {child.name} log ---\n{child.log_tail(40)}", file=sys.stderr)
            raise

    return start


# --- replaying the workload ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the client saw of one request."""

    kind: str
    seconds: float
    status: int
    cache_status: str
    mcp_method: str = ""


async def replay(
    targets: list[str], requests: list[Request], concurrency: int, label: str
) -> list[Outcome]:
    """Send every request (request ``i`` to ``targets[i % len(targets)]``, under one
    ``Host``: ``SERVICE_AUTHORITY``) with ``concurrency`` requests in flight; gives up after
    ``PHASE_TIMEOUT``."""
    outcomes: list[Outcome] = []
    progress = Progress(label, len(requests))
    pending = iter(enumerate(requests))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency * len(targets))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i, request in pending:
            url = targets[i % len(targets)] + request.path
            mcp_method = request.headers.get("Mcp-Method", "")
            began = time.perf_counter()
            try:
                headers = {**request.headers, "Host": SERVICE_AUTHORITY}
                async with session.request(
                    request.method, url, data=request.body, headers=headers
                ) as response:
                    await response.read()
                    outcome = Outcome(
                        request.kind,
                        time.perf_counter() - began,
                        response.status,
                        response.headers.get("Cache-Status", ""),
                        mcp_method,
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                seconds = time.perf_counter() - began
                outcome = Outcome(request.kind, seconds, 0, repr(exc), mcp_method)
            outcomes.append(outcome)
            progress.advance()

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            await asyncio.wait_for(asyncio.gather(*workers), PHASE_TIMEOUT)
        except TimeoutError:
            status(f"{label}: gave up after {PHASE_TIMEOUT:.0f}s", done=True)
        finally:
            progress.close()
    return outcomes


class Progress:
    """A one-line progress bar on stderr (a line per quarter when stderr is not a terminal)."""

    WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.began = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._drawn_at = 0.0
        self._quarter = 0

    def advance(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.tty and (now - self._drawn_at > 0.05 or self.done == self.total):
            self._drawn_at = now
            print("\r" + self._line(), end="", file=sys.stderr, flush=True)
        elif not self.tty and self.done * 4 // self.total > self._quarter:
            self._quarter = self.done * 4 // self.total
            print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print("\r" + self._line(), file=sys.stderr, flush=True)

    def _line(self) -> str:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        elapsed = time.perf_counter() - self.began
        return f"  {self.label:<16} [{bar}] {self.done:>5}/{self.total}  {elapsed:5.1f}s"


@dataclass(frozen=True)
class ServiceCalls:
    """What the service served since its counters were last reset (its ``/_stats``): every
    call, and the MCP calls per method."""

    total: int
    mcp: Counter[str]


async def service_calls(service_url: str, reset: bool = False) -> ServiceCalls:
    """Calls the service served since its last reset (and reset the counters)."""
    async with aiohttp.ClientSession() as session:
        method = "DELETE" if reset else "GET"
        async with session.request(method, f"{service_url}/_stats") as response:
            stats = await response.json()
    return ServiceCalls(int(stats["total"]), Counter(stats.get("mcp", {})))


# --- reading sidecache's metrics ----------------------------------------------------------------


async def scrape(admin_urls: list[str]) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample of every replica's ``/metrics``, summed over the replicas."""
    totals: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    async with aiohttp.ClientSession() as session:
        for url in admin_urls:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    totals[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return totals


def metric(totals: Counter, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (n, ls), value in totals.items() if n == name and wanted <= set(ls))


@dataclass(frozen=True)
class TierLine:
    name: str
    lookups: float
    hits: float


def tier_lines(totals: Counter, semantic: bool) -> list[TierLine]:
    ops = "sidecache_cache_operations_total"
    lines = [
        TierLine(
            tier.upper(),
            metric(totals, ops, tier=tier, op="get"),
            metric(totals, ops, tier=tier, op="get", result="hit"),
        )
        for tier in ("l1", "l2")
    ]
    if semantic:
        decisions = "sidecache_semantic_decisions_total"
        lines.append(
            TierLine("semantic", metric(totals, decisions), metric(totals, decisions, result="hit"))
        )
    return lines


# --- the report -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of unsorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def answered_by(outcome: Outcome) -> str:
    """Which tier (or the upstream) answered, from the response's ``Cache-Status``."""
    cache_status = outcome.cache_status
    if outcome.status == 0 or outcome.status >= 500:
        return "error"
    for tier in ("l1", "l2", "semantic"):
        if f"hit; detail={tier}" in cache_status:
            return tier
    if "; hit" in cache_status:
        return "stale"
    return "upstream"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def report(
    world: World,
    requests: list[Request],
    direct: list[Outcome],
    proxied: list[Outcome],
    calls: tuple[ServiceCalls, ServiceCalls],
    totals: Counter,
) -> str:
    """The demo's closing table."""
    direct_calls, proxied_calls = (run.total for run in calls)
    out = []
    n = len(requests)
    out.append(f"workload: {summary(requests)}")
    replicas = len(world.replicas)
    semantic = "on" if world.semantic else "not in this build"
    out.append(f"sidecache: {replicas} replica(s) sharing Redis; semantic tier: {semantic}")
    out.append("")
    out.append(f"{'':26}{'direct':>20}{'via sidecache':>20}")
    out.append(f"{'requests':26}{len(direct):>20}{len(proxied):>20}")
    failed = [sum(1 for o in run if o.status == 0 or o.status >= 500) for run in (direct, proxied)]
    out.append(f"{'failed (5xx / error)':26}{failed[0]:>20}{failed[1]:>20}")
    out.append(f"{'upstream calls':26}{direct_calls:>20}{proxied_calls:>20}")
    saved = direct_calls - proxied_calls
    out.append(f"{'upstream calls saved':26}{'':>20}{f'{saved} ({_pct(saved, direct_calls)})':>20}")
    for label, kinds in (
        ("all", None),
        ("agent selection", {"select"}),
        ("search", {"search"}),
        ("catalogue (pass)", {"catalogue"}),
        ("MCP", {"mcp"}),
    ):
        cells = []
        for run in (direct, proxied):
            seconds = [o.seconds for o in run if kinds is None or o.kind in kinds]
            cells.append(f"{_ms(percentile(seconds, 50))} / {_ms(percentile(seconds, 99))}")
        out.append(f"{'p50 / p99 ' + label:26}{cells[0]:>20}{cells[1]:>20}")
    out.append("")
    out.append(f"{'tier':12}{'lookups':>10}{'hits':>10}{'hit ratio':>12}{'answered':>12}")
    answered = Counter(answered_by(o) for o in proxied)
    for line in tier_lines(totals, world.semantic):
        out.append(
            f"{line.name:12}{line.lookups:>10.0f}{line.hits:>10.0f}"
            f"{_pct(line.hits, line.lookups):>12}{_pct(answered[line.name.lower()], n):>12}"
        )
    out.append(f"{'upstream':12}{'':>32}{_pct(answered['upstream'], n):>12}")
    if world.semantic and not metric(totals, "sidecache_semantic_decisions_total"):
        out.append("(semantic: configured, but this build made no semantic lookups)")
    if answered["stale"] or answered["error"]:
        out.append(
            f"{'stale/error':12}{'':>32}{_pct(answered['stale'] + answered['error'], n):>12}"
        )
    out += mcp_report(proxied, calls)
    return "\n".join(out)


#: The order of the MCP table's rows (any other method follows).
MCP_METHODS = (
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "tools/call",
)


def mcp_report(proxied: list[Outcome], calls: tuple[ServiceCalls, ServiceCalls]) -> list[str]:
    """Per MCP method: calls sent through sidecache, how many it answered from cache (their
    ``Cache-Status``), and how many the service served in each run (its ``/_stats``)."""
    mcp = [o for o in proxied if o.kind == "mcp"]
    if not mcp:
        return []
    sent = Counter(o.mcp_method for o in mcp)
    hits = Counter(o.mcp_method for o in mcp if answered_by(o) not in ("upstream", "error"))
    direct, via = calls[0].mcp, calls[1].mcp
    seen = set(sent) | set(direct) | set(via)
    methods = [m for m in MCP_METHODS if m in seen] + sorted(seen - set(MCP_METHODS))
    out = ["", f"{'':42}{'upstream calls':>25}"]
    out.append(f"{'MCP method':26}{'sent':>8}{'hits':>8}{'direct':>10}{'via sidecache':>15}")
    rows = [(m, sent[m], hits[m], direct[m], via[m]) for m in methods]
    rows.append(("all MCP", len(mcp), hits.total(), direct.total(), via.total()))
    for label, *counts in rows:
        out.append(f"{label:26}{counts[0]:>8}{counts[1]:>8}{counts[2]:>10}{counts[3]:>15}")
    saved = direct.total() - via.total()
    out.append(f"{'MCP upstream calls saved':26}{f'{saved} ({_pct(saved, direct.total())})':>41}")
    return out


def where_to_look(world: World) -> str:
    lines = ["Everything is still running (Ctrl-C to stop):"]
    lines.append(f"  agent service   {world.service.url}   (calls served: /_stats; MCP: /mcp)")
    for n, replica in enumerate(world.replicas, 1):
        admin = replica.admin_url
        dashboard = f"{admin}/" if http_ok(f"{admin}/") else "(not served by this build)"
        lines.append(f"  sidecache #{n}    {replica.url}   → upstream {world.service.url}")
        lines.append(f"    metrics       {admin}/metrics")
        lines.append(f"    stats         {admin}/stats")
        lines.append(f"    dashboard     {dashboard}")
    lines.append(f"  Redis           {world.redis.url}")
    lines.append(f"  PostgreSQL      {world.postgres.dsn}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def status(message: str, done: bool = False) -> None:
    """A status line on stderr; overwritten by the next one on a terminal until ``done``."""
    if sys.stderr.isatty():
        print(f"\r\033[K{message}", end="\n" if done else "", file=sys.stderr, flush=True)
    elif done:
        print(message, file=sys.stderr, flush=True)


async def run_phases(
    world: World, requests: list[Request], concurrency: int
) -> tuple[list[Outcome], list[Outcome], tuple[ServiceCalls, ServiceCalls], Counter]:
    service = world.service.url
    await service_calls(service, reset=True)
    direct = await replay([service], requests, concurrency, "direct")
    direct_calls = await service_calls(service, reset=True)
    # Each replica gets its share of the clients, as behind a Kubernetes service.
    proxied = await replay([r.url for r in world.replicas], requests, concurrency, "via sidecache")
    proxied_calls = await service_calls(service)
    totals = await scrape([r.admin_url for r in world.replicas])
    return direct, proxied, (direct_calls, proxied_calls), totals


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--requests", type=int, default=1200, help="requests per replay (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default %(default)s)"
    )
    parser.add_argument(
        "--replicas", type=int, default=2, help="sidecache replicas (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 20_000:
        parser.error("--requests: expected 1 to 20000")
    if not 1 <= args.concurrency <= 256 or not 1 <= args.replicas <= 4:
        parser.error("--concurrency: 1 to 256, --replicas: 1 to 4")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    requests = build_workload(args.requests, args.seed, mcp_share=MCP_SHARE)
    with (
        stopping_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="sidecache-demo-") as workdir,
        contextlib.ExitStack() as stack,
    ):
        try:
            world = start_world(stack, Path(workdir), args.replicas)
            status(f"replaying {summary(requests)}, {args.concurrency} in flight", done=True)
            direct, proxied, calls, totals = asyncio.run(
                run_phases(world, requests, args.concurrency)
            )
            print()
            print(report(world, requests, direct, proxied, calls, totals))
            print()
            if not args.keep:
                print("Run with --keep to leave it running and browse /metrics, /stats and")
                print("the dashboard on the admin port.")
                return 0
            print(where_to_look(world), flush=True)
            while True:
                signal.pause()
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        finally:
            status("stopping every process the demo started ...", done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
