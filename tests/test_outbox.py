"""The outbox holds writes to the end of the loop's turn and keeps their order."""

from __future__ import annotations

import asyncio

from proxy.outbox import HOLD_AT_MOST, Outbox


class Transport:
    def __init__(self, log: list[tuple[str, bytes]], name: str) -> None:
        self.log, self.name, self.closing = log, name, False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.log.append((self.name, data))

    def is_closing(self) -> bool:
        return self.closing


async def test_writes_wait_for_the_end_of_the_turn_and_keep_their_order():
    log: list[tuple[str, bytes]] = []
    a, b = Transport(log, "a"), Transport(log, "b")
    outbox = Outbox(asyncio.get_running_loop())
    for transport, data in ((a, b"1"), (b, b"2"), (a, b"3")):
        outbox.write(transport, data)
    assert log == []  # nothing before the turn ends
    await asyncio.sleep(0)
    assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]


async def test_a_flush_writes_at_once_and_the_turn_end_adds_nothing_twice():
    log: list[tuple[str, bytes]] = []
    a = Transport(log, "a")
    outbox = Outbox(asyncio.get_running_loop())
    outbox.write(a, b"1")
    outbox.flush()  # as before a close or a hand-over
    assert log == [("a", b"1")]
    await asyncio.sleep(0)
    assert log == [("a", b"1")]


async def test_a_transport_closed_meanwhile_takes_nothing_and_the_others_theirs():
    log: list[tuple[str, bytes]] = []
    gone, staying = Transport(log, "gone"), Transport(log, "staying")
    outbox = Outbox(asyncio.get_running_loop())
    outbox.write(gone, b"1")
    outbox.write(staying, b"2")
    gone.closing = True  # the client left (or was aborted) before the turn ended
    await asyncio.sleep(0)
    assert log == [("staying", b"2")]


async def test_past_its_bound_everything_held_goes_out_at_once():
    log: list[tuple[str, bytes]] = []
    a = Transport(log, "a")
    outbox = Outbox(asyncio.get_running_loop())
    outbox.write(a, b"x" * (HOLD_AT_MOST // 2))
    assert log == []
    outbox.write(a, b"y" * (HOLD_AT_MOST // 2))  # the bound reached: out now, in order
    assert [data[:1] for _, data in log] == [b"x", b"y"]
    outbox.write(a, b"z")  # held again, from nothing
    assert len(log) == 2
    await asyncio.sleep(0)
    assert [data[:1] for _, data in log] == [b"x", b"y", b"z"]
