"""Every client connection is bounded: in idle time, in the time its request head takes to
arrive, and in number; on the fast path and after aiohttp has taken a connection over. A
flood of malformed requests is answered, counted, and logged a line a second at most."""

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from proxy.outbox import HOLD_AT_MOST
from tests.conftest import wait_until

BODY = b'{"task": "refund my order"}'
#: A head that is never finished: its first line, then one header byte at a time.
HALF_HEAD = b"POST /agents/select HTTP/1.1\r\nHost: sidecache\r\nX-Slow: "


def post(body: bytes = BODY) -> bytes:
    return (
        b"POST /agents/select HTTP/1.1\r\nHost: sidecache\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


async def connect(proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.client.server.port)


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers of one answer, its body read too."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    status, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status.split(" ")[1]), headers


async def closed_by_proxy(reader: asyncio.StreamReader) -> bool:
    """Whether the proxy closes the connection (within a generous deadline)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout=10) == b""
    except ConnectionResetError:
        return True


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, every: float = 0.05
) -> int:
    """Send one more header byte whenever the proxy has not closed within ``every``
    seconds; the number of bytes sent before it closed (at most 400: ~20 s)."""
    closed = asyncio.ensure_future(reader.read())
    sent = 0
    try:
        for _ in range(400):
            done, _pending = await asyncio.wait({closed}, timeout=every)
            if done:
                return sent
            writer.write(b"a")
            await writer.drain()
            sent += 1
        raise AssertionError("the proxy kept a half-sent head open")
    except ConnectionResetError:
        return sent
    finally:
        closed.cancel()


def server_of(proxy):
    """The proxy port's ``FastPathServer``."""
    return proxy.client.server.runner.server


def closed_count(proxy, reason: str) -> float:
    return proxy.runtime.metrics.connections_closed.labels(reason)._value.get()


async def warm(proxy) -> None:
    """Store the answer to ``post()``: the request goes to aiohttp, being a miss."""
    reader, writer = await connect(proxy)
    writer.write(post())
    await answer_of(reader)
    writer.close()


async def handed_to_aiohttp(proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose first request was a miss: aiohttp serves it from then on."""
    reader, writer = await connect(proxy)
    writer.write(post(b'{"task": "%d"}' % id(reader)))
    status, headers = await answer_of(reader)
    assert (status, headers["cache-status"]) == (200, "sidecache; fwd=miss; stored")
    return reader, writer


# --- idle ------------------------------------------------------------------------------------


async def test_a_silent_connection_is_closed_after_idle_timeout(make_proxy, upstream):
    proxy = await make_proxy(server={"idle_timeout": "300ms"})
    reader, writer = await connect(proxy)

    assert await closed_by_proxy(reader)
    writer.close()
    assert closed_count(proxy, "idle_timeout") == 1


async def test_a_fast_connection_is_closed_after_idle_timeout_between_requests(
    make_proxy, upstream
):
    proxy = await make_proxy(server={"idle_timeout": "300ms"})
    await warm(proxy)
    reader, writer = await connect(proxy)
    writer.write(post())
    _status, headers = await answer_of(reader)
    assert headers["cache-status"] == "sidecache; hit; detail=l1"

    assert await closed_by_proxy(reader)
    writer.close()


async def test_a_connection_aiohttp_serves_is_closed_after_idle_timeout(make_proxy, upstream):
    proxy = await make_proxy(server={"idle_timeout": "300ms"})
    reader, writer = await handed_to_aiohttp(proxy)

    assert await closed_by_proxy(reader)
    writer.close()
    assert closed_count(proxy, "idle_timeout") == 1


async def test_a_connection_is_not_closed_while_its_request_is_answered(make_proxy, upstream):
    proxy = await make_proxy(server={"idle_timeout": "200ms", "header_timeout": "200ms"})
    upstream.delay = 0.6  # longer than both bounds
    reader, writer = await connect(proxy)
    writer.write(post())

    status, _headers = await answer_of(reader)
    writer.close()
    assert status == 200
    assert closed_count(proxy, "idle_timeout") == closed_count(proxy, "header_timeout") == 0


async def test_a_client_that_reads_no_answers_is_let_go_after_idle_timeout(make_proxy, upstream):
    proxy = await make_proxy(server={"idle_timeout": "500ms"})
    await warm(proxy)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (fills sooner)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.client.server.port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    for _ in range(3000):  # hits, never read, until the proxy stops reading
        writer.write(post() * 100)
        try:
            await asyncio.wait_for(writer.drain(), timeout=1)
        except (TimeoutError, ConnectionResetError):  # (reset: let go already)
            break
    else:
        raise AssertionError("the proxy read every request of a client reading no answers")

    async def let_go() -> bool:
        return server_of(proxy).limits.open == 0

    await wait_until(let_go)
    writer.transport.abort()
    assert closed_count(proxy, "idle_timeout") == 1


# --- header ----------------------------------------------------------------------------------


async def test_a_half_sent_head_is_closed_after_header_timeout_though_bytes_trickle_in(
    make_proxy, upstream
):
    proxy = await make_proxy(server={"header_timeout": "500ms", "idle_timeout": "60s"})
    reader, writer = await connect(proxy)
    writer.write(HALF_HEAD)

    sent = await trickle_until_closed(reader, writer)
    writer.close()
    assert sent > 1  # it kept sending, and was closed anyway
    assert closed_count(proxy, "header_timeout") == 1
    assert closed_count(proxy, "idle_timeout") == 0
    assert upstream.total_calls == 0


async def test_a_half_sent_head_on_a_connection_aiohttp_serves_is_closed_after_header_timeout(
    make_proxy, upstream
):
    proxy = await make_proxy(server={"header_timeout": "500ms", "idle_timeout": "60s"})
    reader, writer = await handed_to_aiohttp(proxy)
    writer.write(HALF_HEAD)

    sent = await trickle_until_closed(reader, writer)
    writer.close()
    assert sent > 1
    assert closed_count(proxy, "header_timeout") == 1


async def test_a_long_head_handed_to_aiohttp_midway_keeps_its_deadline(make_proxy, upstream):
    proxy = await make_proxy(server={"header_timeout": "800ms", "idle_timeout": "60s"})
    reader, writer = await connect(proxy)
    # More than the fast path reads (16 KiB), within aiohttp's limits: aiohttp takes over
    # halfway through the head, and the head's deadline still counts from its first byte.
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 150) for i in range(110))
    writer.write(HALF_HEAD.replace(b"X-Slow: ", filler + b"X-Slow: "))

    sent = await trickle_until_closed(reader, writer)
    writer.close()
    assert closed_count(proxy, "header_timeout") == 1
    assert sent < 200  # closed within ~10 s of the first byte, not only by idle_timeout


async def test_a_pipelined_request_behind_a_slow_one_is_not_cut_off(make_proxy, upstream):
    proxy = await make_proxy(server={"header_timeout": "200ms", "idle_timeout": "60s"})
    upstream.delay = 0.6  # the first answer takes longer than header_timeout
    reader, writer = await connect(proxy)
    writer.write(post(b'{"task": "slow"}') + post(b'{"task": "behind"}'))

    answers = [await answer_of(reader) for _ in range(2)]
    writer.close()
    assert [status for status, _ in answers] == [200, 200]
    assert closed_count(proxy, "header_timeout") == 0


# --- body (fast path) -------------------------------------------------------------------------


async def test_a_body_that_stops_arriving_on_the_fast_path_is_answered_408(make_proxy, upstream):
    proxy = await make_proxy(server={"body_timeout": "300ms"})
    await warm(proxy)
    reader, writer = await connect(proxy)
    writer.write(post()[:-5])  # a request the fast path could answer, but for its last bytes

    status, headers = await answer_of(reader)
    writer.close()
    assert status == 408  # by the handler, which the fast path leaves such a request to
    assert headers["connection"] == "close"
    assert closed_count(proxy, "body_timeout") == 1


# --- number ----------------------------------------------------------------------------------


async def test_a_connection_over_max_connections_gets_503_and_the_others_keep_working(
    make_proxy, upstream
):
    proxy = await make_proxy(server={"max_connections": 3})
    # A miss (then served by aiohttp) and two hits (staying on the fast path).
    connections = [await connect(proxy) for _ in range(3)]
    for reader, writer in connections:
        writer.write(post())
        assert (await answer_of(reader))[0] == 200

    reader, writer = await connect(proxy)
    refused = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"\r\nConnection: close\r\n" in refused
    assert closed_count(proxy, "max_connections") == 1
    for reader, writer in connections:
        writer.write(post())
        assert (await answer_of(reader))[0] == 200

    connections.pop()[1].close()

    async def admitted_again() -> bool:
        reader, writer = await connect(proxy)
        writer.write(post())
        answer = await asyncio.wait_for(reader.read(12), timeout=5)
        writer.close()
        return answer == b"HTTP/1.1 200"

    await wait_until(admitted_again)
    for _reader, writer in connections:
        writer.close()


# --- malformed requests ----------------------------------------------------------------------

MALFORMED = {
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "tls": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
}


async def test_a_malformed_request_flood_is_answered_400_counted_and_logged_quietly(
    make_proxy, upstream, caplog
):
    caplog.set_level(logging.DEBUG)
    proxy = await make_proxy()
    loop = asyncio.get_running_loop()
    started = loop.time()
    statuses = []
    kinds = list(MALFORMED.values())
    # For 1.5 s (or 5,000 requests), one connection per request.
    for i in range(5000):
        reader, writer = await connect(proxy)
        writer.write(kinds[i % len(kinds)])
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        statuses.append(answer.split(b" ", 2)[1])
        if loop.time() - started > 1.5:
            break
    elapsed = loop.time() - started

    assert set(statuses) == {b"400"}
    assert proxy.runtime.metrics.malformed_requests._value.get() == len(statuses)
    assert upstream.total_calls == 0
    lines = [r for r in caplog.records if r.name == "proxy.connections"]
    assert 2 <= len(lines) <= elapsed + 1
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.exc_info is not None]
    assert not [r for r in caplog.records if "Error handling request" in r.getMessage()]


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_each_malformed_request_is_answered_400_and_counted_once(
    make_proxy, upstream, request_bytes
):
    proxy = await make_proxy()
    reader, writer = await connect(proxy)
    writer.write(request_bytes)

    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert answer.split(b" ", 2)[1] == b"400"  # (aiohttp answers these as HTTP/1.0)
    assert proxy.runtime.metrics.malformed_requests._value.get() == 1


async def test_a_client_reading_no_answers_cannot_make_the_proxy_hold_many_at_once(
    make_proxy, upstream
):
    # Answers wait for the end of the loop's turn (proxy/outbox.py); a client that pipelines
    # requests for a big stored answer and reads none must still stop being answered once
    # its transport is full, not get every request in its first read answered in that turn.
    route = {"name": "big", "method": "GET", "path": "/big", "ttl": "5m"}
    proxy = await make_proxy(routes=[route])
    get = b"GET /big?size=200000 HTTP/1.1\r\nHost: sidecache\r\n\r\n"
    reader, writer = await connect(proxy)
    writer.write(get)
    assert (await answer_of(reader))[0] == 200  # stored
    writer.close()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.client.server.port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(get * 200)  # one read's worth of requests, never an answer read

    async def paused() -> bool:
        return any(c._paused for c in server_of(proxy).fast_connections)

    await wait_until(paused)
    hits = proxy.runtime.metrics.families()["sidecache_cache_hits"]
    answered = sum(s.value for s in hits if s.name.endswith("_total"))
    writer.transport.abort()
    # What was answered fits in the kernel's socket buffer (it grows up to tcp_wmem's
    # maximum), the outbox's bound and the answer that filled them: far fewer than 200.
    kernel = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    assert 1 <= answered * 200_000 <= kernel + HOLD_AT_MOST + 2 * 200_000
