"""Coalesced Redis reads and the circuit breaker's cheap check."""

import asyncio

import pytest

from core.breaker import CircuitBreaker
from core.config import BreakerConfig
from core.errors import TierUnavailable
from core.tiers.batching import ReadBatcher


class Store:
    """A stand-in for the MGET round trip (the batcher is the component under test)."""

    def __init__(self, data: dict[str, bytes], fail: bool = False) -> None:
        self.data = data
        self.fail = fail
        self.calls: list[list[str]] = []

    async def fetch_many(self, keys: list[str]) -> list[bytes | None]:
        self.calls.append(keys)
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("redis went away")
        return [self.data.get(key) for key in keys]


async def test_concurrent_reads_share_one_round_trip_with_each_key_once():
    store = Store({"a": b"1", "b": b"2"})
    batcher = ReadBatcher(store.fetch_many)
    values = await asyncio.gather(*(batcher.get(k) for k in ["a", "b", "a", "missing", "a"]))
    assert values == [b"1", b"2", b"1", None, b"1"]
    assert store.calls == [["a", "b", "missing"]]


async def test_reads_in_later_iterations_make_new_round_trips():
    store = Store({"a": b"1"})
    batcher = ReadBatcher(store.fetch_many)
    assert await batcher.get("a") == b"1"
    assert await batcher.get("a") == b"1"
    assert len(store.calls) == 2


class HeldStore(Store):
    """A round trip that returns only when the test says so."""

    def __init__(self, data: dict[str, bytes]) -> None:
        super().__init__(data)
        self.release = asyncio.Event()
        self.failing: set[int] = set()  # which round trips fail (0 is the first)

    async def fetch_many(self, keys: list[str]) -> list[bytes | None]:
        number = len(self.calls)
        self.calls.append(keys)
        await self.release.wait()
        if number in self.failing:
            raise ConnectionError("redis went away")
        return [self.data.get(key) for key in keys]


async def until(condition) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


async def test_reads_asked_during_a_round_trip_go_out_together_when_it_returns():
    store = HeldStore({"a": b"1", "b": b"2", "c": b"3"})
    batcher = ReadBatcher(store.fetch_many, hold=60)  # (no turn of this test outlasts it)
    first = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: len(store.calls) == 1)
    later = [asyncio.ensure_future(batcher.get(k)) for k in ("b", "c", "b")]
    for _ in range(5):
        await asyncio.sleep(0)  # turns go by: they wait for the round trip under way
    assert store.calls == [["a"]]
    store.release.set()
    assert await first == b"1"
    assert await asyncio.gather(*later) == [b"2", b"3", b"2"]
    assert store.calls == [["a"], ["b", "c"]]


async def test_a_failed_round_trip_fails_only_its_own_reads_not_those_waiting_behind_it():
    store = HeldStore({"b": b"2"})
    store.failing = {0}
    batcher = ReadBatcher(store.fetch_many, hold=60)
    first = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: len(store.calls) == 1)
    behind = asyncio.ensure_future(batcher.get("b"))
    store.release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await behind == b"2"


async def test_reads_do_not_wait_for_a_round_trip_past_the_hold():
    # Redis in trouble: a round trip that does not return holds later reads back only
    # ``hold``; then they go out on their own.
    store = HeldStore({"a": b"1", "b": b"2"})
    batcher = ReadBatcher(store.fetch_many, hold=0.01)
    first = asyncio.ensure_future(batcher.get("a"))
    await until(lambda: len(store.calls) == 1)
    later = asyncio.ensure_future(batcher.get("b"))
    await until(lambda: len(store.calls) == 2)  # (within the deadline of ``until``)
    assert store.calls == [["a"], ["b"]]
    store.release.set()
    assert (await first, await later) == (b"1", b"2")


async def test_a_failed_round_trip_fails_every_read_in_it():
    batcher = ReadBatcher(Store({}, fail=True).fetch_many)
    results = await asyncio.gather(*(batcher.get(k) for k in "abc"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_an_open_breaker_lets_exactly_one_probe_through_after_its_pause():
    now = [0.0]
    breaker = CircuitBreaker("l2", BreakerConfig(failures=1, open_for=5), clock=lambda: now[0])

    async def fail():
        raise ConnectionError

    with pytest.raises(TierUnavailable):
        await breaker.call(fail)
    assert breaker.skipping
    now[0] = 6.0
    assert not breaker.skipping  # checking claims nothing...
    assert breaker.allow()  # ...the probe is claimed here, once
    assert breaker.skipping
    breaker.record_success()
    assert breaker.available and not breaker.skipping
