"""Writes held to the end of the event loop's turn, then sent together.

One turn of the loop often answers many connections: every socket that became readable
gets its request read and, on a hit, its answer written. Each write is a ``send`` to a
loopback or pod-local peer, and when that peer's core is asleep the kernel wakes it for
that one answer. Written one by one between the Python work of the other requests, the
answers wake the peer again and again; written back to back at the end of the turn, the
first wakes it and the rest find it running. On a two-core machine that gave about 30 %
more L1 hits a second (``python -m bench.run --only l1_hit``), with no answer waiting
longer than the turn it was computed in.

Order is kept: a connection's writes leave in the order they were put, and one that
closes its transport flushes first (``Outbox.flush``), so nothing put before is lost.

What is held is bounded: past ``HOLD_AT_MOST`` bytes everything goes out at once. So a big
answer leaves as soon as it is put, and a client that pipelines requests and reads no
answers fills its transport, which pauses it (``pause_writing``), as it would with no
outbox: it cannot make the proxy hold an answer per request it sent.
"""

from __future__ import annotations

import asyncio

#: Bytes held before everything is written at once (asyncio's default high-water mark of a
#: transport's buffer).
HOLD_AT_MOST = 64 * 1024


class Outbox:
    """Bytes per transport, written at the end of the current loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[tuple[asyncio.WriteTransport, bytes]] = []
        self._size = 0

    def write(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append((transport, data))
        self._size += len(data)
        if self._size >= HOLD_AT_MOST:
            self.flush()

    def flush(self) -> None:
        """Write everything held now (also before a transport is closed or handed on)."""
        held, self._held = self._held, []
        self._size = 0
        for transport, data in held:
            # A transport closed meanwhile (the client left, or aborted) takes nothing.
            if not transport.is_closing():
                transport.write(data)
