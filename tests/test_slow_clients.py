"""A client that does not finish sending its body is answered 408 (aiohttp then lingers at
most ``lingering_time`` for the rest before closing: bounded, and not waited for here)."""

import asyncio

import pytest


async def send_half(port: int, method: bytes, path: bytes) -> bytes:
    """A request whose Content-Length promises more than the client sends; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        method + b" " + path + b" HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"task":'
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    writer.close()
    return head + body


@pytest.mark.parametrize(
    ("method", "path"),
    [(b"POST", b"/agents/select"), (b"PUT", b"/items/1")],
    ids=["cacheable-route", "pass-through-put"],
)
async def test_a_body_that_stops_arriving_is_answered_408(make_proxy, upstream, method, path):
    proxy = await make_proxy(server={"body_timeout": "300ms"})

    answer = await send_half(proxy.client.port, method, path)

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"body_timeout" in answer
    assert upstream.total_calls == 0
    closed = proxy.runtime.metrics.connections_closed.labels("body_timeout")._value.get()
    assert closed == 1
