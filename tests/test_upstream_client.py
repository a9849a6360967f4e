"""The upstream client speaks HTTP/1.1 as a service expects: against a service written byte
by byte here (``Scripted``) and the real aiohttp test upstream, it reads every framing of an
answer, reuses a connection only when the answer left it clean, stays within its pool, and
turns every failure into an error its caller can tell apart."""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from multidict import CIMultiDict

from examples.embedded import free_port
from proxy.upstream_client import (
    ConnectFailed,
    InvalidAnswer,
    ReadTimeout,
    RequestBodyFailed,
    UpstreamClient,
    UpstreamClosed,
)
from tests.conftest import wait_until
from tests.upstream import FakeUpstream, echo_of
from tests.wire import Seen, read_request

#: How long a test waits for something that should happen at once.
PROMPT = 5.0


#: What the service does with a request: writes to ``writer``; returns whether the
#: connection stays open for the next request.
Script = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Scripted:
    """An HTTP/1.1 service on a loopback port that answers each request with ``script``."""

    script: Script
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    #: Connections the client closed.
    closed_by_client: int = 0
    #: Set for every connection the client closes.
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def connection_of(self, target: str) -> int:
        return next(seen.connection for seen in self.seen if seen.target == target)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                seen = await read_request(reader, number)
                if seen is None:
                    self.closed_by_client += 1
                    self.client_closed.set()
                    return
                self.seen.append(seen)
                keep = await self.script(seen, writer)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            # Closed by the client mid-request or mid-answer (a reset, when it left bytes
            # unread).
            self.closed_by_client += 1
            self.client_closed.set()
        finally:
            self.writers.discard(writer)
            writer.close()


def answer(body: bytes = b"ok", status: str = "200 OK", *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def ok(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(answer(f"{seen.connection}".encode()))
    return True


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Scripted]:
    service = Scripted(script)
    service.server = await asyncio.start_server(service.serve, "127.0.0.1", 0)
    try:
        yield service
    finally:
        service.server.close()
        for writer in list(service.writers):
            writer.close()
        await service.server.wait_closed()


@asynccontextmanager
async def client_of(url: str, **options: float) -> AsyncIterator[UpstreamClient]:
    settings = {
        "pool_size": 10,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "keepalive_timeout": 30.0,
        **options,
    }
    client = UpstreamClient(url, **settings)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.close()


async def get(client: UpstreamClient, target: str, method: str = "GET") -> tuple[int, bytes]:
    response = await client.request(method, target, CIMultiDict())
    async with response:
        return response.status, await response.read()


# --- framing of answers --------------------------------------------------------------------


async def test_sequential_requests_share_one_kept_alive_connection():
    async with scripted(ok) as service, client_of(service.url) as client:
        answers = [await get(client, f"/n/{n}") for n in range(5)]

        assert answers == [(200, b"0")] * 5
        assert service.connections == 1
        assert client.idle == 1


async def test_a_chunked_answer_is_read_as_its_decoded_body():
    async def chunked(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer-X: 1\r\n\r\n"
        )
        return True

    async with scripted(chunked) as service, client_of(service.url) as client:
        response = await client.request("GET", "/", {})

        assert response.content_length is None
        assert await response.read() == b"hello world"
        assert await get(client, "/again") == (200, b"hello world")
        assert service.connections == 1


async def test_an_answer_without_length_lasts_until_the_connection_closes():
    async def until_close(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        return False

    async with scripted(until_close) as service, client_of(service.url) as client:
        assert await get(client, "/a") == (200, b"all of it")
        assert await get(client, "/b") == (200, b"all of it")

        assert service.connections == 2


async def test_connection_close_from_the_service_is_honoured():
    async def closing(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"bye", "200 OK", "Connection: close"))
        return False

    async with scripted(closing) as service, client_of(service.url) as client:
        assert await get(client, "/a") == (200, b"bye")
        assert await get(client, "/b") == (200, b"bye")

        assert service.connections == 2
        assert client.idle == 0


async def test_interim_answers_are_skipped():
    async def with_interims(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        writer.write(answer(b"final", "201 Created"))
        return True

    async with scripted(with_interims) as service, client_of(service.url) as client:
        response = await client.request("POST", "/items", {}, b"x")

        assert (response.status, response.reason) == (201, "Created")
        assert "Link" not in response.headers
        assert await response.read() == b"final"
        assert await get(client, "/next") == (201, b"final")
        assert service.connections == 1


@pytest.mark.parametrize(
    ("method", "status"),
    [("HEAD", "200 OK"), ("GET", "204 No Content"), ("GET", "304 Not Modified")],
)
async def test_answers_without_a_body_leave_the_connection_reusable(method, status):
    async def bodiless(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/after":
            writer.write(answer(b"after"))
        else:  # a length announced, and no body sent, as RFC 9110 has it
            writer.write(
                f'HTTP/1.1 {status}\r\nContent-Length: 1234\r\nETag: "v1"\r\n\r\n'.encode()
            )
        return True

    async with scripted(bodiless) as service, client_of(service.url) as client:
        response = await client.request(method, "/", {})

        assert response.content_length == 1234
        assert await response.read() == b""
        assert await get(client, "/after") == (200, b"after")
        assert service.connections == 1


async def test_a_second_answer_to_one_request_retires_the_connection():
    async def double(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/double":
            writer.write(answer(b"one") + answer(b"unasked"))
        else:
            writer.write(answer(f"{seen.connection}".encode()))
        return True

    async with scripted(double) as service, client_of(service.url) as client:
        assert await get(client, "/double") == (200, b"one")
        assert await get(client, "/next") == (200, b"1")


# --- bytes past the answer's end (RFC 9112 §6.3: it ends at its length; what follows is no
# answer, and the connection cannot be reused) -----------------------------------------------


def after_extra(sent: bytes, later: bytes = b"", wait: asyncio.Event | None = None) -> Script:
    """A service that answers ``/next`` plainly (its body names its connection) and every
    other request with ``sent``, then, once ``wait`` is set, ``later`` in a write of its own."""

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/next":
            writer.write(answer(f"{seen.connection}".encode()))
            return True
        writer.write(sent)
        if wait is not None:
            await writer.drain()
            await wait.wait()
            writer.write(later)
        return True

    return script


async def assert_closed_then_fresh(service: Scripted, client: UpstreamClient) -> None:
    """The connection that carried the extra bytes is closed, and the next request succeeds
    on a new one."""
    await asyncio.wait_for(service.client_closed.wait(), PROMPT)
    assert client.open == 0
    assert await get(client, "/next") == (200, b"1")
    assert service.connections == 2


@pytest.mark.parametrize(
    ("method", "sent", "status", "body"),
    [
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more", 200, b"hello"),
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nmore",
            200,
            b"hello",
        ),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b""),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\nhello", 204, b""),
        (
            "GET",
            b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "v1"\r\n\r\nhello',
            304,
            b"",
        ),
        (
            "GET",
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more",
            200,
            b"hello",
        ),
    ],
    ids=["content-length", "chunked", "head", "204", "304", "after-an-interim-answer"],
)
async def test_bytes_past_the_end_in_the_same_write_leave_the_answer_as_announced(
    method, sent, status, body
):
    async with scripted(after_extra(sent)) as service, client_of(service.url) as client:
        assert await get(client, "/extra", method) == (status, body)

        await assert_closed_then_fresh(service, client)


async def test_bytes_past_the_end_in_a_later_write_leave_the_answer_as_announced():
    head_arrived = asyncio.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    script = after_extra(head, b"hello, and more", head_arrived)

    async with scripted(script) as service, client_of(service.url) as client:
        response = await client.request("GET", "/extra", {})
        head_arrived.set()

        assert await response.read() == b"hello"
        await assert_closed_then_fresh(service, client)


async def test_bytes_past_the_end_arriving_on_an_idle_connection_close_it():
    answer_read = asyncio.Event()
    script = after_extra(answer(b"hello"), b"and more", answer_read)

    async with scripted(script) as service, client_of(service.url) as client:
        assert await get(client, "/extra") == (200, b"hello")
        assert client.idle == 1
        answer_read.set()

        await assert_closed_then_fresh(service, client)


async def test_a_body_shorter_than_announced_still_fails():
    async def short(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/next":
            writer.write(answer(f"{seen.connection}".encode()))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhello, and more")
        return False  # and closes

    async with scripted(short) as service, client_of(service.url) as client:
        response = await client.request("GET", "/short", {})
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

        assert await get(client, "/next") == (200, b"1")


async def test_a_chunk_framing_error_in_the_same_write_as_the_head_is_still_invalid():
    sent = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"

    async with scripted(after_extra(sent)) as service, client_of(service.url) as client:
        with pytest.raises(InvalidAnswer):
            await client.request("GET", "/extra", {})

        await assert_closed_then_fresh(service, client)


async def test_a_request_body_is_sent_with_its_length_and_the_target_verbatim():
    async with scripted(ok) as service, client_of(service.url + "/base/") as client:
        headers = CIMultiDict({"X-Tenant": "a", "Content-Length": "999", "Host": "forged"})
        await (await client.request("POST", "/a%2Fb/%41?x=%41", headers, b"12345")).read()
        await (await client.request("DELETE", "/d", {})).read()
        await (await client.request("GET", "/g", {})).read()

        post, delete, plain = service.seen
        assert (post.method, post.target, post.body) == ("POST", "/base/a%2Fb/%41?x=%41", b"12345")
        assert post.headers["content-length"] == "5"
        assert post.headers["host"] == service.url.removeprefix("http://")
        assert post.headers["x-tenant"] == "a"
        assert delete.headers["content-length"] == "0"
        assert "content-length" not in plain.headers


@pytest.mark.parametrize(
    ("headers", "framing"),
    [
        ({}, ("transfer-encoding", "chunked")),
        ({"Content-Length": "30000"}, ("content-length", "30000")),
    ],
    ids=["chunked", "content-length"],
)
async def test_a_streamed_request_body_arrives_whole(headers, framing):
    async def body() -> AsyncIterator[bytes]:
        for n in range(3):
            yield bytes([n]) * 10_000

    async with scripted(ok) as service, client_of(service.url) as client:
        response = await client.request("PUT", "/up", headers, body())
        await response.read()

        (seen,) = service.seen
        assert seen.body == b"".join(bytes([n]) * 10_000 for n in range(3))
        name, value = framing
        assert seen.headers[name] == value
        assert await get(client, "/next") == (200, b"0")  # the connection was left clean


async def test_an_answer_before_the_request_body_ends_is_read_and_its_connection_closed():
    gate = asyncio.Event()
    client_left = asyncio.Event()

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"too big", "413 Content Too Large"))
        await writer.drain()
        await reader.read()  # whatever comes, until the client closes
        client_left.set()
        writer.close()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await gate.wait()  # the rest would come much later
        yield b"y"

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client_of(f"http://127.0.0.1:{port}") as client:
            response = await client.request("PUT", "/", {}, body())

            assert response.status == 413
            assert await response.read() == b"too big"
            await asyncio.wait_for(client_left.wait(), PROMPT)
            assert client.open == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_a_streamed_body_that_fails_fails_the_request():
    async def failing() -> AsyncIterator[bytes]:
        yield b"part"
        raise ConnectionResetError("client went away")

    async with scripted(ok) as service, client_of(service.url) as client:
        with pytest.raises(RequestBodyFailed) as failure:
            await client.request("POST", "/", {}, failing())

        assert isinstance(failure.value.__cause__, ConnectionResetError)
        assert isinstance(failure.value, aiohttp.ClientConnectionError)
        await asyncio.wait_for(service.client_closed.wait(), PROMPT)
        assert service.seen == []


async def test_a_header_that_would_smuggle_a_line_is_refused_before_anything_is_sent():
    async with scripted(ok) as service, client_of(service.url) as client:
        with pytest.raises(ValueError):
            await client.request("GET", "/", {"X-A": "1\r\nX-Injected: 1"})

        assert service.connections == 0


# --- failures ------------------------------------------------------------------------------


async def test_a_body_cut_short_fails_the_read_and_the_connection_is_not_reused():
    async def cut(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            return False
        writer.write(answer())
        return True

    async with scripted(cut) as service, client_of(service.url) as client:
        response = await client.request("GET", "/cut", {})
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

        assert await get(client, "/whole") == (200, b"ok")
        assert service.connection_of("/whole") == 1


async def test_a_chunked_body_cut_short_fails_the_read():
    async def cut(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        return False

    async with scripted(cut) as service, client_of(service.url) as client:
        response = await client.request("GET", "/", {})

        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_a_service_closing_before_answering_is_an_upstream_closed_error():
    async def silent_second(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/first":
            writer.write(answer())
            return True
        return False

    async with scripted(silent_second) as service, client_of(service.url) as client:
        with pytest.raises(UpstreamClosed) as fresh_failure:
            await client.request("GET", "/second", {})
        await get(client, "/first")
        with pytest.raises(UpstreamClosed) as reused_failure:
            await client.request("GET", "/second", {})

        assert (fresh_failure.value.reused, fresh_failure.value.answered) == (False, False)
        assert (reused_failure.value.reused, reused_failure.value.answered) == (True, False)


async def test_a_head_broken_off_says_answer_bytes_had_arrived():
    async def broken(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")
        return False

    async with scripted(broken) as service, client_of(service.url) as client:
        with pytest.raises(UpstreamClosed) as failure:
            await client.request("GET", "/", {})

        assert failure.value.answered


async def test_bytes_that_are_no_http_answer_are_an_invalid_answer():
    async def garbage(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return True

    async with scripted(garbage) as service, client_of(service.url) as client:
        with pytest.raises(InvalidAnswer):
            await client.request("GET", "/", {})


async def test_no_answer_within_the_read_timeout_is_a_timeout():
    held = asyncio.Event()

    async def hold(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await held.wait()
        return False

    async with scripted(hold) as service, client_of(service.url, read_timeout=0.2) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ReadTimeout) as failure:
            await client.request("GET", "/", {})

        assert isinstance(failure.value, TimeoutError)
        assert 0.15 < asyncio.get_running_loop().time() - started < PROMPT
        held.set()


async def test_a_body_that_stops_arriving_times_out_its_read():
    held = asyncio.Event()

    async def stall(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await held.wait()
        return False

    async with scripted(stall) as service, client_of(service.url, read_timeout=0.2) as client:
        response = await client.request("GET", "/", {})
        assert await response.content.read(3) == b"abc"

        with pytest.raises(ReadTimeout):
            await response.content.read(7)
        held.set()


async def test_a_refused_connection_is_a_connect_failure():
    async with client_of(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectFailed) as failure:
            await client.request("GET", "/", {})

        assert isinstance(failure.value, aiohttp.ClientConnectionError)
        assert client.open == 0


# --- the pool ------------------------------------------------------------------------------


async def test_requests_beyond_the_pool_size_wait_for_a_connection():
    release = asyncio.Event()

    async def held(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(answer(seen.target.encode()))
        return True

    async with scripted(held) as service, client_of(service.url, pool_size=2) as client:
        requests = [asyncio.ensure_future(get(client, f"/{n}")) for n in range(3)]
        await wait_until(lambda: _true(client.waiting == 1 and len(service.seen) == 2), PROMPT)

        assert client.open == 2
        release.set()
        answers = await asyncio.gather(*requests)

        assert sorted(answers) == [(200, b"/0"), (200, b"/1"), (200, b"/2")]
        assert service.connections == 2


async def test_a_waiting_request_gets_a_place_when_a_connection_closes():
    release = asyncio.Event()

    async def close_one(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(answer(b"bye", "200 OK", "Connection: close"))
        return False

    async with scripted(close_one) as service, client_of(service.url, pool_size=1) as client:
        requests = [asyncio.ensure_future(get(client, f"/{n}")) for n in range(2)]
        await wait_until(lambda: _true(client.waiting == 1), PROMPT)
        release.set()

        assert await asyncio.gather(*requests) == [(200, b"bye")] * 2
        assert service.connections == 2


async def test_idle_connections_close_after_the_keepalive_timeout():
    async with scripted(ok) as service, client_of(service.url, keepalive_timeout=0.1) as client:
        await get(client, "/")

        await asyncio.wait_for(service.client_closed.wait(), PROMPT)
        assert client.idle == 0
        assert client.open == 0


async def test_a_fresh_request_takes_a_new_connection():
    async with scripted(ok) as service, client_of(service.url) as client:
        await get(client, "/warm")
        response = await client.request("GET", "/fresh", {}, fresh=True)

        assert await response.read() == b"1"
        assert service.connections == 2


async def test_a_response_released_before_its_end_closes_its_connection():
    async def big(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"x" * 1_000_000))
        return True

    async with scripted(big) as service, client_of(service.url) as client:
        response = await client.request("GET", "/", {})
        await response.content.read(10)
        response.release()

        await asyncio.wait_for(service.client_closed.wait(), PROMPT)
        assert await get(client, "/") == (200, b"x" * 1_000_000)
        assert service.connections == 2


async def test_a_response_dropped_unreleased_gives_its_place_back():
    async def big(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(b"x" * 1_000_000))
        return True

    async with scripted(big) as service, client_of(service.url) as client:
        response = await client.request("GET", "/", {})
        await response.content.read(10)

        del response
        assert client.open == 0


async def test_requests_leave_no_reference_cycles_for_the_garbage_collector():
    async with scripted(ok) as service, client_of(service.url) as client:
        await get(client, "/warm")
        gc.collect()
        gc.disable()
        try:
            for n in range(50):
                await get(client, f"/{n}")
            assert gc.collect() == 0
        finally:
            gc.enable()


async def test_a_large_body_is_streamed_without_being_buffered_whole():
    size, chunk = 64 * 1024 * 1024, b"z" * 65536
    stalled = asyncio.Event()

    async def endless(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/small":
            writer.write(answer())
            return True
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            if writer.transport.get_write_buffer_size() > 0:
                stalled.set()  # the client's socket is full: it is not reading
            await writer.drain()
        return True

    async with scripted(endless) as service, client_of(service.url) as client:
        response = await client.request("GET", "/", {})
        await asyncio.wait_for(stalled.wait(), PROMPT * 4)

        assert response.content.total_bytes < 1024 * 1024
        digest, total = hashlib.sha256(), 0
        async for part in response.content.iter_any():
            digest.update(part)
            total += len(part)
        assert total == size
        assert digest.hexdigest() == hashlib.sha256(chunk * (size // len(chunk))).hexdigest()
        assert await get(client, "/small") == (200, b"ok")
        assert service.connections == 1


# --- against aiohttp's server ----------------------------------------------------------------


async def test_a_real_aiohttp_service_is_reused_and_sees_the_target_verbatim(
    upstream: FakeUpstream,
):
    async with client_of(upstream.url, pool_size=4) as client:
        targets = [f"/a%2Fb/{n}?q=%41" for n in range(20)]
        answers = await asyncio.gather(*(get(client, target) for target in targets))

        assert [echo_of(body)["raw_path"] for _, body in answers] == targets
        assert client.open <= 4


async def test_a_real_aiohttp_chunked_stream_arrives_whole(upstream: FakeUpstream):
    async with client_of(upstream.url) as client:
        response = await client.request("GET", "/big?size=3000000&chunked=1", {})
        body = await response.read()

        assert response.content_length is None
        assert len(body) == 3_000_000
        assert body[:256] == bytes(range(256))
        assert echo_of((await get(client, "/echo"))[1])["path"] == "/echo"
        assert client.open == 1


async def test_a_real_aiohttp_service_gets_a_streamed_body(upstream: FakeUpstream):
    payload = bytes(range(256)) * 1000

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 7000):
            yield payload[start : start + 7000]

    async with client_of(upstream.url) as client:
        response = await client.request("POST", "/upload", {"Content-Type": "x/y"}, body())
        echo = echo_of(await response.read())

        assert echo["body_size"] == len(payload)
        assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()
        assert echo["headers"]["Transfer-Encoding"] == "chunked"


async def _true(value: bool) -> bool:
    return value
