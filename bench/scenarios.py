"""The throughput scenarios: what each sends, to which server, and how it is checked.

A scenario is only worth its number if it measured what its name says: before each run a
"hit" scenario is primed until the target answers from the intended tier (a mix: every hot
key of the run), and after it the call counter of the bench upstream behind the target must
show what the scenario claims: no calls for a hit scenario, one per request for a miss or
pass-through, one per ``new_every`` requests for a mix. A run that fails its check is
reported, not hidden.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from bench.load import Load, LoadGenerator, LoadResult, hot_body
from bench.servers import cpu_seconds, process_tree

JSON = {"Content-Type": "application/json"}
#: The body of every fixed agent-selection request.
SELECT_BODY = json.dumps(
    {"task": "Where is my parcel? The tracking page has not changed in four days", "top_k": 3}
).encode()
PRIME_TIMEOUT = 10.0
SETTLE_TIMEOUT, SETTLE_POLL = 5.0, 0.1
#: Below this much CPU (in cores) the server under test was not what limited the run.
SATURATED = 0.85
#: Upstream calls per request a scenario claims: every request a hit, or each one forwarded.
HITS, EACH = 0.0, 1.0
#: How far the upstream's count may stray from the claim, beyond what in-flight requests
#: explain: 1 % of the calls expected, plus 2 (see ``check``).
CALLS_SLACK = 0.01


@dataclass(frozen=True)
class Scenario:
    """One measured configuration.

    ``upstream`` is the bench upstream whose calls are counted during the run (for a
    ``direct`` scenario, the target itself) and ``calls_per_request`` what it must see:
    ``HITS`` (0), ``EACH`` (1), ``1 / new_every`` for a mix, or ``None`` (not checked).
    ``prime`` gets the run's nonce (a mix's hot keys depend on it). A ``short`` scenario
    (a baseline, or bound by its origin's latency) runs for ``--short-duration``.
    """

    name: str
    title: str
    load: Load
    sut_pid: Callable[[], int | None]
    upstream: str
    calls_per_request: float | None = None
    prime: Callable[[str], None] | None = None
    compare_nginx: str | None = None
    compare_direct: str | None = None
    short: bool = False


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
    #: CPU (in cores) that processes other than the server under test used on its cores:
    #: other work on the machine taking the core the run is about (``None``: not pinned).
    others_cpu: float | None = None
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
            "others_cpu": None if self.others_cpu is None else round(self.others_cpu, 3),
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


def settled_calls(upstream_url: str) -> int:
    """The upstream's call count once it stops moving: when the load generator stops, a
    proxy may still be forwarding the requests that were in flight (its tail latency on a
    busy core is ~100 ms). Counted here, they belong to the run that sent them, not to the
    next one."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    calls = upstream_calls(upstream_url)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL)  # a poll interval: nothing to wait on but the counter
        again = upstream_calls(upstream_url)
        if again == calls:
            break
        calls = again
    return calls


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


def prime_fixed(url: str, body: bytes | None, header: str, wanted: str) -> Callable[[str], None]:
    """A scenario's priming step for one fixed request (the same in every run)."""
    prime = prime_until(url, body, header, wanted)
    return lambda nonce: prime()


def prime_hot_keys(url: str, hot_keys: int, header: str, wanted: str) -> Callable[[str], None]:
    """A mix's priming step: every hot key of the run cached and answered from the cache."""

    def prime(nonce: str) -> None:
        for i in range(hot_keys):
            prime_until(url, hot_body(nonce, i), header, wanted)()

    return prime


# --- one run ------------------------------------------------------------------------------------


def _busy_times() -> list[tuple[float, float]]:
    """Per core: (busy seconds, total seconds) so far."""
    out = []
    for t in psutil.cpu_times(percpu=True):
        total = sum(t)
        out.append((total - t.idle - getattr(t, "iowait", 0.0), total))
    return out


def _cores_of(processes: list[psutil.Process]) -> list[int]:
    """The cores the server under test may run on (all of them when it is not pinned)."""
    try:
        return processes[0].cpu_affinity() if processes else []
    except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
        return []


def run_once(
    scenario: Scenario,
    generator: LoadGenerator,
    *,
    duration: float,
    connections: int,
    nonce: str,
) -> Trial:
    """Prime, run the load, and check the run against what the scenario claims."""
    if scenario.prime is not None:
        scenario.prime(nonce)
    pid = scenario.sut_pid()
    processes = process_tree(pid) if pid is not None else []
    upstream_calls(scenario.upstream, reset=True)
    cpu_before, busy_before, began = cpu_seconds(processes), _busy_times(), time.perf_counter()
    result: LoadResult = generator.run(scenario.load, duration, connections, nonce)
    elapsed = time.perf_counter() - began
    cpu = (cpu_seconds(processes) - cpu_before) / elapsed
    busy = [
        (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        for (b0, t0), (b1, t1) in zip(busy_before, _busy_times(), strict=True)
    ]
    calls = settled_calls(scenario.upstream)
    trial = Trial(
        result.rps, result.p50_ms, result.p99_ms, result.requests, result.errors, calls, cpu, busy
    )
    cores = _cores_of(processes)
    if cores and len(cores) < len(busy):
        trial.others_cpu = max(0.0, sum(busy[c] for c in cores) - cpu)
    trial.problems = check(scenario, trial, connections)
    return trial


def expected_calls(per_request: float, requests: int, connections: int) -> tuple[float, float]:
    """The range of upstream calls a run claiming ``per_request`` may show.

    The load generator counts completed requests; up to ``connections`` more were sent and
    possibly forwarded when it stopped. The bodies follow one counter, so a mix's new keys
    are exactly every ``new_every``-th request sent: without a fault the count lies in
    ``[per_request * requests, per_request * (requests + connections)]``. The slack (1 % of
    the expected calls, plus 2) is far below what a real fault adds: a hit forwarded once
    in a thousand requests is 5 % more calls than a 1-in-50 mix expects.
    """
    low = per_request * requests
    high = per_request * (requests + connections)
    slack = 2 + CALLS_SLACK * low
    return max(0.0, low - slack), high + slack


def check(scenario: Scenario, trial: Trial, connections: int) -> list[str]:
    problems = []
    if trial.requests == 0:
        return ["no request completed"]
    if trial.errors > trial.requests * 0.001:
        problems.append(f"{trial.errors} errors")
    per_request = scenario.calls_per_request
    if per_request is None:
        return problems
    calls = trial.upstream_calls or 0
    low, high = expected_calls(per_request, trial.requests, connections)
    if not low <= calls <= high:
        expected = "none" if per_request == HITS else f"{per_request * trial.requests:,.0f}"
        problems.append(
            f"{calls:,} upstream calls for {trial.requests:,} requests (expected {expected})"
        )
    return problems
