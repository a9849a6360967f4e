"""L1's byte bound holds in real memory: what it counts is what the process pays for."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from core.config import L1Config
from core.entry import CachedResponse
from core.tiers.memory import MemoryTier

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024**2

#: Body sizes as (share of entries, smallest, largest): JSON answers of a few hundred bytes
#: to a few KB, and a mix where some answers are tens or hundreds of KB.
MIXES = {
    "small_json": [(1.0, 200, 4000)],
    "some_large_bodies": [(0.85, 200, 4000), (0.12, 4000, 32000), (0.03, 64000, 256000)],
}


def _text(rnd: random.Random, length: int) -> str:
    return "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=length))


def _body_length(rnd: random.Random, mix: str) -> int:
    roll = rnd.random()
    for share, smallest, largest in MIXES[mix]:
        if roll < share:
            return rnd.randint(smallest, largest)
        roll -= share
    return MIXES[mix][-1][2]


def _blob(rnd: random.Random, mix: str) -> bytes:
    """One stored answer as L2 holds it: a JSON body and the ~8 headers an upstream sends."""
    head = b'{"agent": "%s", "score": 0.5, "notes": "' % _text(rnd, 8).encode()
    body = head + b"x" * max(0, _body_length(rnd, mix) - len(head) - 2) + b'"}'
    minute, second = rnd.randint(0, 59), rnd.randint(0, 59)
    headers = (
        ("Content-Type", "application/json; charset=utf-8"),
        ("Date", f"Tue, 14 May 2024 10:{minute:02}:{second:02} GMT"),
        ("Server", "uvicorn"),
        ("X-Request-Id", _text(rnd, 32)),
        ("Cache-Control", f"public, max-age={rnd.choice((60, 300, 3600))}"),
        ("ETag", f'"{_text(rnd, 16)}"'),
        ("Vary", "Accept-Encoding"),
        ("X-Agent-Version", f"1.{rnd.randint(0, 9)}.{rnd.randint(0, 99)}"),
    )
    entry = CachedResponse(
        200,
        headers,
        body,
        stored_at=time.time(),
        ttl=rnd.choice((60.0, 300.0, 3600.0)),  # mixed TTLs: the expiry heap keeps dead items
        tags=("agents",) if rnd.random() < 0.3 else (),
        route="select",
    )
    return entry.to_bytes(compress_above=10**9)


def _key(i: int) -> str:
    return hashlib.blake2b(i.to_bytes(8, "big"), digest_size=20).hexdigest()  # as core.keys


def _fill(
    tier: MemoryTier,
    blobs: list[bytes],
    until: int,
    on_insert: Callable[[int], None] | None = None,
) -> int:
    """Store fresh entries (parsed from ``blobs``, as an L2 hit is) until their sizes add up
    to ``until`` bytes; returns how many were stored."""
    inserted = 0
    for i in range(10**7):
        if inserted >= until:
            return i
        entry = CachedResponse.from_bytes(blobs[i % len(blobs)])
        tier.set_nowait(_key(i), entry)
        inserted += entry.size
        if on_insert is not None:
            on_insert(i)
    raise AssertionError("the fill never reached its target")


def report_rss_growth(max_bytes: int, mix: str) -> None:
    """Run in a fresh interpreter: fill an L1 of ``max_bytes`` four times over and print, as
    JSON, the largest RSS growth seen once the bound binds."""
    rnd = random.Random(7)
    blobs = [_blob(rnd, mix) for _ in range(512)]
    tier = MemoryTier(L1Config(max_entries=10**9, max_bytes=max_bytes))
    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    samples: list[int] = []

    def sample(i: int) -> None:
        if i % 256 == 0 and tier.bytes > 0.9 * max_bytes:
            samples.append(process.memory_info().rss - baseline)

    inserted = _fill(tier, blobs, 4 * max_bytes, sample)
    gc.collect()
    samples.append(process.memory_info().rss - baseline)
    result = {"growth": max(samples), "inserted": inserted, "live": len(tier), "bytes": tier.bytes}
    print(json.dumps(result))


def _rss_growth_in_fresh_process(max_bytes: int, mix: str) -> dict[str, int]:
    # A fresh interpreter, so pytest's own allocations do not blur the number; a fixed hash
    # seed so dict layouts repeat. MALLOC_ARENA_MAX is left alone: the fill is single-threaded
    # and so lives in glibc's main arena anyway (setting it to 1 changed nothing).
    code = f"import tests.test_memory as t; t.report_rss_growth({max_bytes}, {mix!r})"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("mix", list(MIXES))
def test_rss_growth_stays_within_the_byte_bound_once_it_binds(mix):
    max_bytes = 32 * MiB

    result = _rss_growth_in_fresh_process(max_bytes, mix)

    assert result["live"] < result["inserted"]  # entries were evicted: the bound binds
    assert result["bytes"] > 0.95 * max_bytes
    assert result["growth"] <= 1.25 * max_bytes, result
    assert result["growth"] >= 0.6 * max_bytes, result  # the count is not wildly pessimistic


def test_l1_counts_at_least_what_python_allocates_for_its_items():
    """tracemalloc sees requested sizes (no allocator rounding or fragmentation), so it should
    come in under L1's count, but not far under."""
    rnd = random.Random(3)
    blobs = [_blob(rnd, "small_json") for _ in range(64)]
    tier_bytes = 4 * MiB
    tier = MemoryTier(L1Config(max_entries=10**9, max_bytes=tier_bytes))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _fill(tier, blobs, 3 * tier_bytes)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert 0.75 * tier.bytes <= traced <= tier.bytes
