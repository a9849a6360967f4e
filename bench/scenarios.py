"""The throughput scenarios: what each sends, to which server, and how it is checked.

A scenario is only worth its number if it measured what its name says: before each run a
"hit" scenario is primed until the target answers from the intended tier, and after it the
bench upstream's call counter must show no calls for a hit scenario and one call per
request for a miss scenario. A run that fails its check is reported, not hidden.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from bench.load import Load, LoadGenerator, LoadResult
from bench.servers import cpu_seconds, process_tree

JSON = {"Content-Type": "application/json"}
#: The body of every fixed agent-selection request.
SELECT_BODY = json.dumps(
    {"task": "Where is my parcel? The tracking page has not changed in four days", "top_k": 3}
).encode()
PRIME_TIMEOUT = 10.0
#: Below this much CPU (in cores) the server under test was not what limited the run.
SATURATED = 0.85


@dataclass(frozen=True)
class Scenario:
    """One measured configuration.

    ``upstream_calls`` says what the bench upstream behind the target must see during the
    run: ``"none"`` (every request a hit), ``"each"`` (every request forwarded) or ``None``
    (not checked: the target is the upstream itself).
    """

    name: str
    title: str
    load: Load
    sut_pid: Callable[[], int | None]
    upstream_calls: str | None = None
    prime: Callable[[], None] | None = None
    compare_nginx: str | None = None
    compare_direct: str | None = None


@dataclass
class Trial:
    """One run of one scenario."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    upstream_calls: int | None
    sut_cpu: float
    core_busy: list[float]
    problems: list[str] = field(default_factory=list)

    @property
    def saturated(self) -> bool:
        """Whether the server under test was what limited this run (it used ~a whole core)."""
        return self.sut_cpu >= SATURATED

    def to_json(self) -> dict:
        return {
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
            "upstream_calls": self.upstream_calls,
            "sut_cpu": round(self.sut_cpu, 3),
            "core_busy": [round(b, 3) for b in self.core_busy],
            "saturated": self.saturated,
            "problems": self.problems,
        }


# --- HTTP helpers (the orchestrator is synchronous) ------------------------------------------


def send(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=JSON if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def upstream_calls(upstream_url: str, reset: bool = False) -> int:
    _, _, body = send(f"{upstream_url}/_stats", "DELETE" if reset else "GET")
    return int(json.loads(body)["total"])


def prime_until(url: str, body: bytes | None, header: str, wanted: str) -> Callable[[], None]:
    """A priming step: send the request until ``header`` contains ``wanted`` (e.g. the
    ``Cache-Status`` says ``hit; detail=l2``), polling with a deadline."""
    method = "POST" if body is not None else "GET"

    def prime() -> None:
        deadline = time.monotonic() + PRIME_TIMEOUT
        seen = ""
        while time.monotonic() < deadline:
            status, headers, _ = send(url, method, body)
            seen = headers.get(header, "")
            if status == 200 and wanted in seen:
                return
            time.sleep(0.02)  # a poll interval: the L2 write happens behind the response
        raise RuntimeError(f"{url}: {header} never showed {wanted!r} (last: {seen!r})")

    return prime


# --- one run ------------------------------------------------------------------------------------


def _busy_times() -> list[tuple[float, float]]:
    """Per core: (busy seconds, total seconds) so far."""
    out = []
    for t in psutil.cpu_times(percpu=True):
        total = sum(t)
        out.append((total - t.idle - getattr(t, "iowait", 0.0), total))
    return out


def run_once(
    scenario: Scenario,
    generator: LoadGenerator,
    *,
    duration: float,
    connections: int,
    nonce: str,
    upstream_url: str,
) -> Trial:
    """Prime, run the load, and check the run against what the scenario claims."""
    if scenario.prime is not None:
        scenario.prime()
    pid = scenario.sut_pid()
    processes = process_tree(pid) if pid is not None else []
    upstream_calls(upstream_url, reset=True)
    cpu_before, busy_before, began = cpu_seconds(processes), _busy_times(), time.perf_counter()
    result: LoadResult = generator.run(scenario.load, duration, connections, nonce)
    elapsed = time.perf_counter() - began
    cpu = (cpu_seconds(processes) - cpu_before) / elapsed
    busy = [
        (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(busy_before, _busy_times(), strict=True)
    ]
    calls = upstream_calls(upstream_url)
    trial = Trial(
        result.rps, result.p50_ms, result.p99_ms, result.requests, result.errors, calls, cpu, busy
    )
    trial.problems = check(scenario, trial)
    return trial


def check(scenario: Scenario, trial: Trial) -> list[str]:
    problems = []
    if trial.requests == 0:
        return ["no request completed"]
    if trial.errors > trial.requests * 0.001:
        problems.append(f"{trial.errors} errors")
    calls = trial.upstream_calls or 0
    if scenario.upstream_calls == "none" and calls > 2 + trial.requests * 0.001:
        problems.append(f"{calls} upstream calls in a hit scenario")
    if scenario.upstream_calls == "each" and calls < trial.requests * 0.99:
        problems.append(f"only {calls} upstream calls for {trial.requests} requests")
    return problems
