"""Precision and recall of the semantic tier on labelled query pairs.

    python -m bench.semantic_eval                         # dev pairs, embedded PostgreSQL
    python -m bench.semantic_eval --pairs my-pairs.jsonl --pg-dsn postgresql://...

Each pair runs through the real tier — real PostgreSQL + pgvector, the configured default
embedder, the real precision guard: ``a`` is stored in a scope of its own, then ``b`` is
looked up there. Label ``same`` must hit; ``different`` and ``unrelated`` must not.
A table per threshold, with and without the guard, is followed by the result at the
shipped defaults; the last line is always ``precision=P recall=R false_hit_rate=F``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core.config import EmbedderConfig, SemanticRouteConfig, SemanticStoreConfig
from core.entry import CachedResponse
from core.metrics import Metrics
from core.semantic.embedders import build_embedder
from core.semantic.guard import verify
from core.semantic.tier import SemanticTier

DEV_PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "semantic-pairs-dev.jsonl"
TABLE = "sidecache_bench_eval"
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
LABELS = ("same", "different", "unrelated")


@dataclass(frozen=True, slots=True)
class Pair:
    """One labelled pair: would the answer stored for ``a`` be right for ``b``?"""

    id: str
    a: str
    b: str
    label: str


@dataclass(frozen=True, slots=True)
class Score:
    """Counts of one run over all pairs, and the rates derived from them."""

    hits_same: int
    hits_wrong: int
    same: int
    wrong: int

    @property
    def precision(self) -> float:
        hits = self.hits_same + self.hits_wrong
        return self.hits_same / hits if hits else 1.0

    @property
    def recall(self) -> float:
        return self.hits_same / self.same if self.same else 0.0

    @property
    def false_hit_rate(self) -> float:
        return self.hits_wrong / self.wrong if self.wrong else 0.0

    def summary(self) -> str:
        return (
            f"precision={self.precision:.3f} recall={self.recall:.3f} "
            f"false_hit_rate={self.false_hit_rate:.3f}"
        )


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in LABELS:
            raise SystemExit(f"{path}:{number}: label must be one of {LABELS}")
        pairs.append(Pair(str(row.get("id", number)), row["a"], row["b"], row["label"]))
    return pairs


async def run_pairs(
    tier: SemanticTier, pairs: list[Pair], threshold: float, guard: bool
) -> dict[str, bool]:
    """Look up every ``b`` in its pair's scope; True where the hit is ``a``'s answer."""
    hits = {}
    for pair in pairs:
        hit = await tier.lookup(f"eval:{pair.id}", pair.b, threshold, guard)
        hits[pair.id] = hit is not None and hit.entry.body == pair.id.encode()
    return hits


def score(pairs: list[Pair], hits: dict[str, bool]) -> Score:
    same = [p for p in pairs if p.label == "same"]
    wrong = [p for p in pairs if p.label != "same"]
    return Score(
        hits_same=sum(hits[p.id] for p in same),
        hits_wrong=sum(hits[p.id] for p in wrong),
        same=len(same),
        wrong=len(wrong),
    )


async def evaluate(pairs: list[Pair], dsn: str, verbose: bool) -> Score:
    defaults = SemanticRouteConfig(field="query")
    config = SemanticStoreConfig(dsn=dsn, table=TABLE, command_timeout=5.0)
    tier = SemanticTier(config, build_embedder(EmbedderConfig()), Metrics())
    await tier.start()
    try:
        await tier.purge(everything=True)
        for pair in pairs:
            entry = CachedResponse(200, (), pair.id.encode(), ttl=3600)
            await tier.store(f"eval:{pair.id}", "eval", pair.a, entry)

        counts = Counter(p.label for p in pairs)
        print(f"{len(pairs)} pairs: " + ", ".join(f"{counts[k]} {k}" for k in LABELS))
        print()
        print(f"{'threshold':>9}  {'guard':<5}  {'precision':>9}  {'recall':>6}  "
              f"{'false_hit':>9}  {'hits':>4}  {'wrong':>5}")  # fmt: skip
        for threshold in THRESHOLDS:
            for guard in (False, True):
                result = score(pairs, await run_pairs(tier, pairs, threshold, guard))
                print(
                    f"{threshold:>9.2f}  {'on' if guard else 'off':<5}  "
                    f"{result.precision:>9.3f}  {result.recall:>6.3f}  "
                    f"{result.false_hit_rate:>9.3f}  {result.hits_same + result.hits_wrong:>4}  "
                    f"{result.hits_wrong:>5}"
                )

        hits = await run_pairs(tier, pairs, defaults.threshold, defaults.guard)
        _explain(pairs, hits, verbose)
        print()
        print(f"shipped defaults: threshold={defaults.threshold} guard={defaults.guard}")
        return score(pairs, hits)
    finally:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.close()
        await tier.close()


def _explain(pairs: list[Pair], hits: dict[str, bool], verbose: bool) -> None:
    """What the guard said at the defaults: rejections by reason, and every wrong hit."""
    reasons = Counter()
    for pair in pairs:
        verdict = verify(pair.a, pair.b)
        if not verdict.ok:
            reasons[verdict.reason] += 1
        wrong = hits[pair.id] != (pair.label == "same")
        if verbose or (wrong and pair.label != "same"):
            outcome = "hit " if hits[pair.id] else "miss"
            detail = "" if verdict.ok else f"  [{verdict.reason}: {verdict.detail}]"
            print(f"  {outcome} {pair.label:<9} {pair.id}: {pair.a!r} / {pair.b!r}{detail}")
    print()
    print("guard verdicts on all pairs by reason: " + ", ".join(
        f"{reason}={count}" for reason, count in reasons.most_common()
    ))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=DEV_PAIRS, help="JSON-lines pair file")
    parser.add_argument("--pg-dsn", help="existing PostgreSQL with pgvector (default: embedded)")
    parser.add_argument("--verbose", action="store_true", help="list every pair's outcome")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.pairs)

    with contextlib.ExitStack() as stack:
        dsn = args.pg_dsn
        if dsn is None:
            from examples.embedded import PostgresServer

            dsn = stack.enter_context(PostgresServer()).dsn
        result = asyncio.run(evaluate(pairs, dsn, args.verbose))
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
