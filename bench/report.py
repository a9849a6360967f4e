"""Turning trials into the printed table and the JSON file: medians, ratios, targets."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bench.coalescing import Coalescing
from bench.scenarios import Scenario, Trial

#: Other processes taking at least this much of the server under test's core is noted.
OTHERS_NOTED = 0.1


@dataclass
class Summary:
    """A scenario's result: the median of its trials, and its ratios to the comparisons."""

    scenario: Scenario
    trials: list[Trial]
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return statistics.median(t.rps for t in self.trials)

    @property
    def p50_ms(self) -> float:
        return statistics.median(t.p50_ms for t in self.trials)

    @property
    def p99_ms(self) -> float:
        return statistics.median(t.p99_ms for t in self.trials)

    @property
    def sut_cpu(self) -> float:
        return statistics.median(t.sut_cpu for t in self.trials)

    @property
    def calls_per_request(self) -> float | None:
        """Upstream calls per completed request (median over trials)."""
        ratios = [t.upstream_calls / t.requests for t in self.trials if t.requests]
        if not ratios or any(t.upstream_calls is None for t in self.trials):
            return None
        return statistics.median(ratios)

    @property
    def others_cpu(self) -> float | None:
        """CPU other processes took on the server under test's cores (median over trials)."""
        values = [t.others_cpu for t in self.trials if t.others_cpu is not None]
        return statistics.median(values) if values else None

    @property
    def problems(self) -> list[str]:
        return [f"trial {n}: {p}" for n, t in enumerate(self.trials, 1) for p in t.problems]

    @property
    def unsaturated(self) -> int:
        """Trials in which the server under test was not the bottleneck."""
        return sum(1 for t in self.trials if not t.saturated)

    def note(self) -> str:
        notes = list(self.problems)
        if self.unsaturated:
            notes.append(f"{self.unsaturated}/{len(self.trials)} trials not SUT-bound")
        others = self.others_cpu
        if others is not None and others >= OTHERS_NOTED:
            notes.append(f"other work took {others:.2f} of the SUT core")
        return "; ".join(notes) if notes else "ok"

    def to_json(self) -> dict:
        return {
            "title": self.scenario.title,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "sut_cpu": round(self.sut_cpu, 3),
            "others_cpu": _rounded(self.others_cpu, 3),
            "upstream_calls_per_request": _rounded(self.calls_per_request, 4),
            "short": self.scenario.short,
            "ratios": {name: round(value, 3) for name, value in self.ratios.items()},
            "problems": self.problems,
            "unsaturated_trials": self.unsaturated,
            "trials": [t.to_json() for t in self.trials],
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarise(scenarios: list[Scenario], trials: dict[str, list[Trial]]) -> dict[str, Summary]:
    summaries = {s.name: Summary(s, trials[s.name]) for s in scenarios if trials.get(s.name)}
    for summary in summaries.values():
        for label, other in (
            ("vs_nginx", summary.scenario.compare_nginx),
            ("vs_direct", summary.scenario.compare_direct),
        ):
            if other in summaries and summaries[other].rps > 0:
                summary.ratios[label] = summary.rps / summaries[other].rps
    return summaries


# --- the issue's targets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    value: float | None
    goal: str
    met: bool | None

    def to_json(self) -> dict:
        value = None if self.value is None or math.isnan(self.value) else round(self.value, 3)
        return {"what": self.what, "value": value, "goal": self.goal, "met": self.met}


def _ratio_target(
    summaries: dict[str, Summary], what: str, name: str, ratio: str, goal: float
) -> Target:
    value = summaries[name].ratios.get(ratio) if name in summaries else None
    met = None if value is None else value >= goal
    return Target(what, value, f">= {goal}x", met)


def targets(
    summaries: dict[str, Summary], coalescing: dict[str, list[Coalescing]], origin_ms: int
) -> list[Target]:
    """The goals set for sidecache against nginx and its upstream, and whether this run met
    them: the keep-alive mix, a miss behind a real origin latency, pass-through by request
    ``no-store``, L1 hits and coalescing; then the older L2-hit and pass-through-GET goals."""
    out = [
        _ratio_target(summaries, "mix / nginx mix", "sidecache_mix", "vs_nginx", 0.6),
        _ratio_target(
            summaries,
            f"miss / direct ({origin_ms} ms origin)",
            f"sidecache_miss_{origin_ms}ms",
            "vs_direct",
            0.9,
        ),
        _ratio_target(
            summaries, "pass-through no-store / nginx", "sidecache_nostore", "vs_nginx", 0.5
        ),
        _ratio_target(summaries, "L1 hit / nginx hit", "sidecache_l1_hit", "vs_nginx", 0.6),
    ]
    runs, direct = coalescing.get("sidecache"), coalescing.get("direct")
    if runs and direct:
        calls = max(r.upstream_calls for r in runs)
        # The origin's time as this client sees it: the same trial sent directly.
        extra = statistics.median(r.p50_ms for r in runs) - statistics.median(
            r.p50_ms for r in direct
        )
        out.append(Target("coalescing: upstream calls (worst trial)", calls, "== 1", calls == 1))
        out.append(Target("coalescing: waiters' p50 over origin's (ms)", extra, "<= 5", extra <= 5))
    else:
        out.append(Target("coalescing: upstream calls (worst trial)", None, "== 1", None))
        out.append(Target("coalescing: waiters' p50 over origin's (ms)", None, "<= 5", None))
    out += [
        _ratio_target(summaries, "L2 hit / nginx hit", "sidecache_l2_hit", "vs_nginx", 0.4),
        _ratio_target(summaries, "pass GET / nginx pass", "sidecache_pass", "vs_nginx", 0.7),
    ]
    return out


# --- printing -----------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def scenario_table(summaries: dict[str, Summary]) -> str:
    head = (
        f"{'scenario':20}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'SUT cpu':>9}{'up/req':>8}"
        f"{'vs nginx':>10}{'vs direct':>11}  notes"
    )
    lines = [head, "-" * len(head)]
    for name, s in summaries.items():
        vs_nginx = s.ratios.get("vs_nginx")
        vs_direct = s.ratios.get("vs_direct")
        lines.append(
            f"{name:20}{s.rps:>10,.0f}{_num(s.p50_ms, '.2f'):>9}{_num(s.p99_ms, '.2f'):>9}"
            f"{s.sut_cpu:>9.2f}{_num(s.calls_per_request, '.3f'):>8}"
            f"{_num(vs_nginx, '.2f') + 'x' if vs_nginx else '-':>10}"
            f"{_num(vs_direct, '.2f') + 'x' if vs_direct else '-':>11}"
            f"  {s.note()}"
        )
    return "\n".join(lines)


def coalescing_table(coalescing: dict[str, list[Coalescing]], clients: int, delay_ms: int) -> str:
    lines = [
        f"coalescing: {clients} identical cold requests at once, upstream latency {delay_ms} ms"
        " (median of trials)",
        f"  {'target':12}{'upstream calls':>16}{'client p50':>12}{'client p99':>12}{'failed':>8}",
    ]
    for name, runs in coalescing.items():
        calls = statistics.median(r.upstream_calls for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        failed = sum(r.failed for r in runs)
        lines.append(
            f"  {name:12}{calls:>16g}{_num(p50, '.1f') + ' ms':>12}"
            f"{_num(p99, '.1f') + ' ms':>12}{failed:>8}"
        )
    return "\n".join(lines)


def targets_table(goals: list[Target]) -> str:
    lines = ["targets:", f"  {'':44}{'this run':>9}  goal"]
    for t in goals:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t.met]
        value = _num(t.value, ".2f")
        lines.append(f"  {t.what:44}{value:>9}  {t.goal:10}{verdict}")
    return "\n".join(lines)
