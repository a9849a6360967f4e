"""sidecache benchmark: ``python -m bench.run [--trials 3] [--duration 5] [--out FILE]``.

Measures, in one run on this machine and with the same load generator for every target,
requests/s and p50/p99 latency of what users send, beside nginx doing the same:

====================  ========================================================================
direct                the bench upstream alone, ``POST /agents/select`` (fixed body)
direct_get            the bench upstream alone, ``GET /agents``
direct_20ms           an upstream taking 20 ms per ``POST /agents/select``, alone, unique bodies
sidecache_l1_hit      sidecache, default config (L1 only), every request an L1 hit
sidecache_l2_hit      sidecache with ``cache.l1.enabled: false`` and Redis: every request an L2 hit
sidecache_mix         sidecache L1 on keep-alive connections: 1 request in 50 a new key (a miss,
                      forwarded and stored), the other 49 cycling over 64 keys cached before
sidecache_nostore     sidecache, the fixed ``POST /agents/select`` (a cacheable, cached route)
                      with ``Cache-Control: no-store``: the cache is bypassed, every request
                      forwarded
sidecache_miss_20ms   sidecache L1 in front of the 20 ms upstream, unique bodies: every request
                      a miss (against ``direct_20ms``: the overhead a proxy adds to a real origin)
sidecache_miss        sidecache L1 in front of the ~30 µs upstream, unique bodies: the CPU cost
                      of a miss (against ``nginx_miss``)
sidecache_pass        sidecache, ``GET /agents`` (no route): streamed pass-through
nginx_hit             nginx ``proxy_cache`` (POST bodies in the key), every request a hit
nginx_mix             nginx ``proxy_cache``, the mix of ``sidecache_mix``
nginx_nostore         nginx, the request of ``sidecache_nostore``: ``proxy_cache_bypass`` and
                      ``proxy_no_cache`` on a ``Cache-Control`` with ``no-store``
nginx_miss            nginx ``proxy_cache``, a unique body per request
nginx_pass            nginx, ``GET /agents`` proxied without cache
====================  ========================================================================

with the ratios sidecache/nginx and sidecache/direct (``direct_get`` for pass-through,
``direct_20ms`` for ``sidecache_miss_20ms``), then a coalescing trial (100 identical cold
requests at once, upstream latency 100 ms: upstream calls and client p50 for sidecache and
for nginx with ``proxy_cache_lock``), the scaling of ``server.workers`` from 1 to 2 when
sidecache implements it, and the targets table (mix, 20 ms miss, no-store pass-through, L1
hit, coalescing; then L2 hit and pass-through GET). Each scenario is run ``--trials`` times,
interleaved (trial 1 of every scenario, then trial 2, ...), and the median is reported;
``--out`` writes everything as JSON, one key per scenario with ``rps``, ``p50_ms``,
``p99_ms``, ``upstream_calls_per_request`` and ``ratios``.

Fairness on a 2-core machine
----------------------------
* Core 1 runs **the server under test** and nothing else busy: the upstream itself for
  ``direct*``, or the one sidecache / nginx being measured (the others are idle, and pinned
  there too). nginx runs one worker; sidecache one process (uvloop when installed).
* Core 0 runs **the load generator** (``wrk -t1``, or ``python -m bench.pyload`` when wrk is
  missing), **the bench upstream behind the proxies** and **Redis**, like services on other
  machines would be. The upstream is a minimal aiohttp app (uvloop) that answers in ~30 µs
  of CPU, so behind a proxy it is not the bottleneck: nginx's miss rate, which forwards as
  many requests as it gets, shows its headroom. The table's "SUT cpu" column (CPU the
  server under test used, in cores) says whether a run was limited by the server under
  test (~1.0) or by something else.
* The ``direct`` baseline is that same upstream given core 1 to itself:
  ``sidecache_miss / direct`` compares a forwarded request with the cheapest possible
  upstream answer, the hardest case for a proxy. A real agent service spends far more per
  request: the miss target is ``sidecache_miss_20ms / direct_20ms`` instead.
* Same request, headers and connections (``--connections``, 64) for every target. nginx's
  cache key holds what sidecache's holds (method, URI, ``Authorization``, body); its cache
  lives on tmpfs (nginx at its best and in memory like L1), ``keepalive_requests`` is raised
  to match aiohttp's unlimited keep-alive, and ``proxy_cache_lock`` is on, since sidecache
  always coalesces.
* Two cores are not enough for every scenario to be bound by its server under test: nginx
  needs so little CPU per request that its miss and pass-through runs are limited by core 0
  (the load generator and the upstream behind it share it), and so may be its hit runs.
  Such runs are flagged "not SUT-bound"; their req/s is a lower bound for nginx, which makes
  the sidecache/nginx ratios of those scenarios upper bounds.
* Other work on the machine adds noise: hence the median of interleaved trials, the load
  average before and after in the JSON's ``meta``, and a note on each scenario where
  other processes took 0.1 core or more of the server under test's core.
* Each run is checked against the call counter of the bench upstream behind its target: a
  hit scenario must make no upstream calls; a miss, no-store or pass-through one, one per
  request; the mix, one per 50 requests. The generator counts completed requests and up to
  ``--connections`` more were in flight when it stopped, so the count must lie between
  ``requests / 50`` and ``(requests + connections) / 50``, give or take 1 % of the
  expected calls plus 2: a hit forwarded once in a thousand requests would already add
  5 %. There must also be no errors. A failed check is printed next to the number. The
  "up/req" column shows the calls per request each scenario saw.
* The mix's new keys are every 50th request by one counter (wrk runs one thread; the
  Python generator shares its counter between connections) and its hot keys are made
  from the run's nonce, primed into the target's cache just before the run, so they
  cannot expire during it. L1 holds 10,000 entries: the 64 hot keys, touched every ~65
  requests, are never evicted by the ~1.3 new keys arriving meanwhile.
* The 20 ms origin is a second pair of bench upstreams started with ``--delay-ms 20``
  (one alone on core 1 for ``direct_20ms``, one on core 0 behind a third sidecache): at
  64 connections, ``direct_20ms`` is at most 64 / 20 ms = 3,200 req/s, and the ratio says
  how much a proxy that must forward every request loses from it.
* ``workers: 2`` runs on both cores (there is no third one), sharing core 0 with the load
  generator, so its scaling understates what two free cores would give.

Time: the six scenarios behind the sidecache/nginx targets (L1 hit, mix, no-store, for
both) run ``--duration`` seconds (5); the baselines, the L2 hit, the ~30 µs miss, the GET
pass-through, the 20 ms-origin pair (bound by their origin's latency, steady within a
second) and the workers scaling run ``--short-duration`` (3). With 3 trials that is
``3 * (6 * 5 + 11 * 3)`` = 189 s of load plus ~20 s of setup, priming and coalescing:
about 3.5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.coalescing import Coalescing, coalescing_trial
from bench.load import Load, LoadGenerator, pick_generator
from bench.report import coalescing_table, scenario_table, summarise, targets, targets_table
from bench.scenarios import (
    EACH,
    HITS,
    JSON,
    SATURATED,
    SELECT_BODY,
    Scenario,
    Trial,
    prime_fixed,
    prime_hot_keys,
    run_once,
    send,
)
from bench.servers import (
    BenchUpstream,
    Nginx,
    listening_processes,
    nginx_available,
    pin_running,
    write_sidecache_config,
)
from examples.embedded import RedisServer
from examples.processes import Child, Sidecache, stopping_on_sigterm

SELECT = "/agents/select"
COALESCE_CLIENTS = 100
COALESCE_DELAY_MS = 100
#: The origin latency of the miss scenario that compares sidecache with its upstream.
ORIGIN_MS = 20
#: The keep-alive mix: one request in MIX_EVERY is a new key, the others cycle over
#: HOT_KEYS keys cached before the run.
MIX_EVERY = 50
HOT_KEYS = 64
NO_STORE = {**JSON, "Cache-Control": "no-store"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def choose_cores() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(load cores, server-under-test cores): the first two cores we may use, or no pinning."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        log("warning: fewer than 2 cores or no taskset: nothing is pinned")
        return None, None
    return (allowed[0],), (allowed[1],)


@dataclass
class Servers:
    """Everything the bench runs against."""

    direct: BenchUpstream
    backend: BenchUpstream
    slow_direct: BenchUpstream
    slow_backend: BenchUpstream
    redis: RedisServer
    l1: Sidecache
    l2: Sidecache
    slow_l1: Sidecache
    nginx: Nginx | None


ChildT = TypeVar("ChildT", bound=Child)


def start_child(stack: contextlib.ExitStack, child: ChildT) -> ChildT:
    stack.callback(child.close)
    try:
        child.start()
    except (RuntimeError, TimeoutError):
        log(f"--- {child.name} failed to start; its log:\n{child.log_tail(40)}")
        raise
    return child


def start_servers(
    stack: contextlib.ExitStack,
    workdir: Path,
    load_cpus: tuple[int, ...] | None,
    sut_cpus: tuple[int, ...] | None,
    with_nginx: bool,
) -> Servers:
    direct = start_child(stack, BenchUpstream(cpus=sut_cpus))
    backend = start_child(stack, BenchUpstream(cpus=load_cpus))
    slow_direct = start_child(stack, BenchUpstream(delay_ms=ORIGIN_MS, cpus=sut_cpus))
    slow_backend = start_child(stack, BenchUpstream(delay_ms=ORIGIN_MS, cpus=load_cpus))
    redis = stack.enter_context(RedisServer())
    assert redis.pid is not None
    pin_running(redis.pid, load_cpus)
    l1_config = write_sidecache_config(workdir / "l1.yaml", backend.url)
    l2_config = write_sidecache_config(
        workdir / "l2.yaml", backend.url, l1=False, redis_url=redis.url
    )
    slow_config = write_sidecache_config(workdir / "slow.yaml", slow_backend.url)
    l1 = start_child(stack, Sidecache(l1_config, backend.url, cpus=sut_cpus))
    l2 = start_child(stack, Sidecache(l2_config, backend.url, cpus=sut_cpus))
    slow_l1 = start_child(stack, Sidecache(slow_config, slow_backend.url, cpus=sut_cpus))
    nginx = start_child(stack, Nginx(backend.port, cpus=sut_cpus)) if with_nginx else None
    return Servers(direct, backend, slow_direct, slow_backend, redis, l1, l2, slow_l1, nginx)


def _pid_of(child: Child) -> Callable[[], int | None]:
    return lambda: child.pid


def _select(url: str, headers: dict[str, str] = JSON, **bodies: int) -> Load:
    """``POST /agents/select``: the fixed body, or (``new_every``, ``hot_keys``) bodies
    made per request."""
    body = None if bodies else SELECT_BODY
    return Load(url, "POST", SELECT, body, headers=headers, **bodies)


def _catalogue(url: str) -> Load:
    return Load(url, "GET", "/agents")


def _hit(child: Child, header: str, wanted: str) -> Callable[[str], None]:
    return prime_fixed(child.url + SELECT, SELECT_BODY, header, wanted)


def _hot(child: Child, header: str, wanted: str) -> Callable[[str], None]:
    return prime_hot_keys(child.url + SELECT, HOT_KEYS, header, wanted)


def sidecache_scenarios(s: Servers) -> list[Scenario]:
    """Sidecache in each configuration, and the upstreams alone (its baselines)."""
    unique = {"new_every": 1}
    mix = {"new_every": MIX_EVERY, "hot_keys": HOT_KEYS}
    slow_direct = f"direct_{ORIGIN_MS}ms"
    return [
        Scenario(
            "direct",
            "upstream alone, POST",
            _select(s.direct.url),
            _pid_of(s.direct),
            upstream=s.direct.url,
            calls_per_request=EACH,
            short=True,
        ),
        Scenario(
            "direct_get",
            "upstream alone, GET",
            _catalogue(s.direct.url),
            _pid_of(s.direct),
            upstream=s.direct.url,
            calls_per_request=EACH,
            short=True,
        ),
        Scenario(
            slow_direct,
            f"upstream alone, {ORIGIN_MS} ms per POST, unique bodies",
            _select(s.slow_direct.url, **unique),
            _pid_of(s.slow_direct),
            upstream=s.slow_direct.url,
            calls_per_request=EACH,
            short=True,
        ),
        Scenario(
            "sidecache_l1_hit",
            "sidecache L1 hit",
            _select(s.l1.url),
            _pid_of(s.l1),
            upstream=s.backend.url,
            calls_per_request=HITS,
            prime=_hit(s.l1, "Cache-Status", "hit; detail=l1"),
            compare_nginx="nginx_hit",
            compare_direct="direct",
        ),
        Scenario(
            "sidecache_l2_hit",
            "sidecache L2 hit (L1 disabled)",
            _select(s.l2.url),
            _pid_of(s.l2),
            upstream=s.backend.url,
            calls_per_request=HITS,
            prime=_hit(s.l2, "Cache-Status", "hit; detail=l2"),
            compare_nginx="nginx_hit",
            compare_direct="direct",
            short=True,
        ),
        Scenario(
            "sidecache_mix",
            f"sidecache L1, 1 request in {MIX_EVERY} a new key, the rest hits",
            _select(s.l1.url, **mix),
            _pid_of(s.l1),
            upstream=s.backend.url,
            calls_per_request=1 / MIX_EVERY,
            prime=_hot(s.l1, "Cache-Status", "hit"),
            compare_nginx="nginx_mix",
        ),
        Scenario(
            "sidecache_nostore",
            "sidecache, POST with Cache-Control: no-store (cache bypassed)",
            _select(s.l1.url, NO_STORE),
            _pid_of(s.l1),
            upstream=s.backend.url,
            calls_per_request=EACH,
            compare_nginx="nginx_nostore",
            compare_direct="direct",
        ),
        Scenario(
            f"sidecache_miss_{ORIGIN_MS}ms",
            f"sidecache miss (unique bodies), {ORIGIN_MS} ms origin",
            _select(s.slow_l1.url, **unique),
            _pid_of(s.slow_l1),
            upstream=s.slow_backend.url,
            calls_per_request=EACH,
            compare_direct=slow_direct,
            short=True,
        ),
        Scenario(
            "sidecache_miss",
            "sidecache miss (unique bodies), ~30 us origin",
            _select(s.l1.url, **unique),
            _pid_of(s.l1),
            upstream=s.backend.url,
            calls_per_request=EACH,
            compare_nginx="nginx_miss",
            compare_direct="direct",
            short=True,
        ),
        Scenario(
            "sidecache_pass",
            "sidecache pass-through GET",
            _catalogue(s.l1.url),
            _pid_of(s.l1),
            upstream=s.backend.url,
            calls_per_request=EACH,
            compare_nginx="nginx_pass",
            compare_direct="direct_get",
            short=True,
        ),
    ]


def nginx_scenarios(nginx: Nginx, upstream: str) -> list[Scenario]:
    """nginx doing what the sidecache scenarios of the same suffix do."""
    return [
        Scenario(
            "nginx_hit",
            "nginx proxy_cache hit",
            _select(nginx.url),
            _pid_of(nginx),
            upstream=upstream,
            calls_per_request=HITS,
            prime=_hit(nginx, "X-Cache-Status", "HIT"),
            compare_direct="direct",
        ),
        Scenario(
            "nginx_mix",
            f"nginx proxy_cache, 1 request in {MIX_EVERY} a new key, the rest hits",
            _select(nginx.url, new_every=MIX_EVERY, hot_keys=HOT_KEYS),
            _pid_of(nginx),
            upstream=upstream,
            calls_per_request=1 / MIX_EVERY,
            prime=_hot(nginx, "X-Cache-Status", "HIT"),
        ),
        Scenario(
            "nginx_nostore",
            "nginx, POST with Cache-Control: no-store (cache bypassed)",
            _select(nginx.url, NO_STORE),
            _pid_of(nginx),
            upstream=upstream,
            calls_per_request=EACH,
            compare_direct="direct",
        ),
        Scenario(
            "nginx_miss",
            "nginx proxy_cache miss (unique bodies), ~30 us origin",
            _select(nginx.url, new_every=1),
            _pid_of(nginx),
            upstream=upstream,
            calls_per_request=EACH,
            compare_direct="direct",
            short=True,
        ),
        Scenario(
            "nginx_pass",
            "nginx pass-through GET",
            _catalogue(nginx.url),
            _pid_of(nginx),
            upstream=upstream,
            calls_per_request=EACH,
            compare_direct="direct_get",
            short=True,
        ),
    ]


def build_scenarios(s: Servers) -> list[Scenario]:
    scenarios = sidecache_scenarios(s)
    if s.nginx is not None:
        scenarios += nginx_scenarios(s.nginx, s.backend.url)
    return scenarios


def measure_throughput(
    scenarios: list[Scenario], generator: LoadGenerator, args: argparse.Namespace
) -> dict[str, list[Trial]]:
    trials: dict[str, list[Trial]] = {s.name: [] for s in scenarios}
    for n in range(1, args.trials + 1):
        for scenario in scenarios:
            trial = run_once(
                scenario,
                generator,
                duration=args.short_duration if scenario.short else args.duration,
                connections=args.connections,
                nonce=f"{scenario.name}-{n}-{uuid.uuid4().hex[:8]}",
            )
            trials[scenario.name].append(trial)
            note = f"  ({'; '.join(trial.problems)})" if trial.problems else ""
            log(
                f"  trial {n}/{args.trials}  {scenario.name:20}{trial.rps:>10,.0f} req/s"
                f"  p99 {trial.p99_ms:7.2f} ms  SUT cpu {trial.sut_cpu:.2f}{note}"
            )
    return trials


def measure_coalescing(s: Servers, trials: int) -> dict[str, list[Coalescing]]:
    # "direct": the same client straight at the upstream, the latency to compare with.
    targets = {"direct": s.backend.url, "sidecache": s.l1.url}
    if s.nginx is not None:
        targets["nginx"] = s.nginx.url
    results: dict[str, list[Coalescing]] = {name: [] for name in targets}
    # One round not recorded: the first miss of a fresh process pays one-off costs (lazy
    # imports, first connections) that are not what the trial is about.
    for url in targets.values():
        coalescing_trial(url, s.backend.url, clients=COALESCE_CLIENTS, delay_ms=COALESCE_DELAY_MS)
    for n in range(1, trials + 1):
        for name, url in targets.items():
            result = coalescing_trial(
                url, s.backend.url, clients=COALESCE_CLIENTS, delay_ms=COALESCE_DELAY_MS
            )
            results[name].append(result)
            log(
                f"  coalescing {n}/{trials}  {name:10} upstream calls {result.upstream_calls}"
                f"  p50 {result.p50_ms:.1f} ms"
            )
    return results


WORKERS_TIMEOUT = 5.0


def measure_workers(
    stack: contextlib.ExitStack,
    workdir: Path,
    s: Servers,
    cores: tuple[tuple[int, ...] | None, tuple[int, ...] | None],
    generator: LoadGenerator,
    args: argparse.Namespace,
) -> dict:
    """L1-hit throughput of ``workers: 1`` (on the SUT core) and ``workers: 2`` (on both
    cores), with one config apart from that: L1 + Redis, which several workers need."""
    load_cpus, sut_cpus = cores
    both = tuple(sorted(set(load_cpus or ()) | set(sut_cpus or ()))) or None
    sidecaches = {}
    for workers, cpus in ((1, sut_cpus), (2, both)):
        config = write_sidecache_config(
            workdir / f"workers{workers}.yaml",
            s.backend.url,
            redis_url=s.redis.url,
            workers=workers,
        )
        sidecache = Sidecache(config, s.backend.url, cpus=cpus)
        try:
            start_child(stack, sidecache)
        except (RuntimeError, TimeoutError) as exc:
            reason = str(exc).strip().splitlines()[-1]
            return {"measured": False, "note": f"not measured: workers: {workers}: {reason}"}
        sidecaches[workers] = sidecache

    listening = _wait_for_listeners(sidecaches[2], 2)
    if listening < 2:
        return {"measured": False, "note": "not measured: workers>1 not implemented"}
    scenarios = [
        Scenario(
            f"sidecache_l1_hit_workers{workers}",
            f"sidecache L1 hit, workers: {workers}",
            _select(sidecache.url),
            _pid_of(sidecache),
            s.backend.url,
            HITS,
            prime=_hit(sidecache, "Cache-Status", "hit"),
            short=True,
        )
        for workers, sidecache in sidecaches.items()
    ]
    trials = measure_throughput(scenarios, generator, args)
    rps1, rps2 = (statistics.median(t.rps for t in trials[sc.name]) for sc in scenarios)
    return {
        "measured": True,
        "workers_1_rps": round(rps1, 1),
        "workers_2_rps": round(rps2, 1),
        "scaling": round(rps2 / rps1, 3) if rps1 else None,
        "listening_processes": listening,
        "note": "workers: 2 runs on both cores, sharing core 0 with the load generator",
        "trials": {sc.name: [t.to_json() for t in trials[sc.name]] for sc in scenarios},
    }


def _wait_for_listeners(sidecache: Sidecache, wanted: int) -> int:
    """How many of the sidecache's processes listen on its port, once ``wanted`` do or
    ``WORKERS_TIMEOUT`` passed."""
    assert sidecache.pid is not None
    deadline = time.monotonic() + WORKERS_TIMEOUT
    listening = listening_processes(sidecache.pid, sidecache.port)
    while listening < wanted and time.monotonic() < deadline:
        time.sleep(0.05)  # a poll interval: workers may still be starting
        listening = listening_processes(sidecache.pid, sidecache.port)
    return listening


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def describe(
    args: argparse.Namespace, generator: LoadGenerator, cores: tuple, loadavg_before: list[float]
) -> dict:
    import aiohttp

    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    return {
        "generator": generator.name,
        "wrk": _version(["wrk", "--version"]) if generator.name == "wrk" else None,
        "nginx": _version(["nginx", "-v"]) if nginx_available() else "not installed",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_cpus": cores[0],
        "sut_cpus": cores[1],
        "trials": args.trials,
        "duration_s": args.duration,
        "short_duration_s": args.short_duration,
        "connections": args.connections,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per run of a compared scenario"
    )
    parser.add_argument(
        "--short-duration",
        type=float,
        default=3.0,
        help="seconds per run of a baseline or latency-bound scenario (see above)",
    )
    parser.add_argument("--connections", type=int, default=64, help="client connections")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx scenarios")
    parser.add_argument("--no-workers", action="store_true", help="skip the workers scaling")
    parser.add_argument(
        "--only",
        default="",
        help="run only the scenarios whose names contain one of these comma-separated words"
        " (e.g. mix,hit: sidecache and nginx alike); targets without them show -",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 10:
        parser.error("--trials: 1 to 10")
    if not 1 <= args.duration <= 60:
        parser.error("--duration: 1 to 60 seconds")
    if not 1 <= args.short_duration <= 60:
        parser.error("--short-duration: 1 to 60 seconds")
    if not 1 <= args.connections <= 1000:
        parser.error("--connections: 1 to 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    load_cpus, sut_cpus = choose_cores()
    if load_cpus is not None:
        os.sched_setaffinity(0, load_cpus)  # this process and its clients: the load core
    generator = pick_generator(load_cpus, args.generator)
    with_nginx = nginx_available() and not args.no_nginx
    if not with_nginx:
        log("nginx not installed (or --no-nginx): nginx scenarios skipped")
    with (
        stopping_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="sidecache-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        log("starting servers ...")
        servers = start_servers(stack, workdir, load_cpus, sut_cpus, with_nginx)
        status, _, _ = send(servers.l1.url + "/agents")
        if status != 200:
            raise RuntimeError(f"sidecache pass-through answered {status}")
        scenarios = build_scenarios(servers)
        if args.only:
            words = [word.strip() for word in args.only.split(",") if word.strip()]
            scenarios = [sc for sc in scenarios if any(word in sc.name for word in words)]
        short = sum(1 for sc in scenarios if sc.short)
        log(
            f"{len(scenarios)} scenarios x {args.trials} trials ({len(scenarios) - short} x"
            f" {args.duration:g}s, {short} x {args.short_duration:g}s) with {generator.name},"
            f" {args.connections} connections"
        )
        trials = measure_throughput(scenarios, generator, args)
        summaries = summarise(scenarios, trials)
        coalescing = measure_coalescing(servers, args.trials)
        if args.no_workers:
            workers = {"measured": False, "note": "not measured: --no-workers"}
        else:
            workers = measure_workers(
                stack, workdir, servers, (load_cpus, sut_cpus), generator, args
            )
    goals = targets(summaries, coalescing, ORIGIN_MS)
    meta = describe(args, generator, (load_cpus, sut_cpus), loadavg_before)
    elapsed = time.perf_counter() - began

    print()
    print(
        f"sidecache bench: {generator.name}, {args.connections} connections, "
        f"{args.duration:g}s per run ({args.short_duration:g}s for baselines and {ORIGIN_MS} ms"
        f" origin runs), median of {args.trials} trials;\nserver under test on "
        f"cpu {sut_cpus}, load + upstream + Redis on cpu {load_cpus}"
    )
    print()
    print(scenario_table(summaries))
    print(
        'SUT cpu: cores the server under test used (median). A run is "not SUT-bound" below'
        f" {SATURATED}: the load core\n(load generator + upstream + Redis) limited it, so its"
        " req/s is a lower bound.\nup/req: upstream calls per request (0 hit, 1 forwarded,"
        f" {1 / MIX_EVERY:g} the mix), checked after every run."
    )
    print()
    print(coalescing_table(coalescing, COALESCE_CLIENTS, COALESCE_DELAY_MS))
    print()
    if workers["measured"]:
        print(
            f"workers: 1 → {workers['workers_1_rps']:,.0f} req/s, 2 → "
            f"{workers['workers_2_rps']:,.0f} req/s (x{workers['scaling']:.2f}; {workers['note']})"
        )
    else:
        print(f"workers: {workers['note']}")
    print()
    print(targets_table(goals))
    print(f"\n(bench took {elapsed:.0f}s)")

    if args.out is not None:
        document = {name: summary.to_json() for name, summary in summaries.items()}
        document["coalescing"] = {
            "clients": COALESCE_CLIENTS,
            "upstream_latency_ms": COALESCE_DELAY_MS,
            **{
                name: {
                    "upstream_calls": statistics.median(r.upstream_calls for r in runs),
                    "p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
                    "trials": [r.to_json() for r in runs],
                }
                for name, runs in coalescing.items()
            },
        }
        document["workers"] = workers
        document["targets"] = [g.to_json() for g in goals]
        document["meta"] = {**meta, "elapsed_s": round(elapsed, 1)}
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
