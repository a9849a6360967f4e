"""The pooled upstream connection: a request that meets a connection the service has closed
is sent again once on a fresh one when that is safe, and never otherwise; the request target
reaches the service byte for byte."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from multidict import CIMultiDict
from yarl import URL

from core.config import Config, config_from_dict
from core.errors import UpstreamUnreachable
from core.limits import UpstreamLimiter
from core.metrics import Metrics
from proxy.forward import Buffered, Upstream
from tests.conftest import DEFAULT_ROUTES
from tests.upstream import FakeUpstream, echo_of
from tests.wire import Seen, read_request


class ClosingUpstream:
    """An HTTP/1.1 service on a loopback port that answers the first ``answers`` requests on
    each connection (keep-alive) and closes the connection when the next one has arrived,
    without answering it: what a request sent on a connection the service has just closed
    for idleness meets. ``partial`` is written before that close (a broken-off answer)."""

    def __init__(self, answers: int = 1, partial: bytes = b"") -> None:
        self.answers = answers
        self.partial = partial
        self.seen: list[Seen] = []
        self._connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def targets(self, target: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.target == target]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self._connections
        self._connections += 1
        self._writers.add(writer)
        try:
            for answered in range(self.answers + 1):
                seen = await read_request(reader, connection)
                if seen is None:  # the client closed its pooled connection
                    return
                self.seen.append(seen)
                if answered == self.answers:
                    writer.write(self.partial)
                    await writer.drain()
                    return
                writer.write(_answer(seen, answered + 1))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


def _answer(seen: Seen, number: int) -> bytes:
    """A JSON answer saying which request this was, kept alive."""
    body = json.dumps(
        {"connection": seen.connection, "number": number, "body_size": len(seen.body)}
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
async def closing() -> AsyncIterator[ClosingUpstream]:
    server = ClosingUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def never_answers() -> AsyncIterator[ClosingUpstream]:
    """Closes every connection on its first request: each is a fresh connection's failure."""
    server = ClosingUpstream(answers=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def breaks_off() -> AsyncIterator[ClosingUpstream]:
    """Starts answering the second request on a connection, then closes it."""
    server = ClosingUpstream(partial=b"HTTP/1.1 200 OK\r\n")
    await server.start()
    yield server
    await server.stop()


def _config(url: str) -> Config:
    return config_from_dict({"upstream": {"url": url, "timeout": "2s"}, "routes": DEFAULT_ROUTES})


@dataclass
class Client:
    """An ``Upstream`` built as the runtime builds it, with its own metrics."""

    upstream: Upstream
    metrics: Metrics

    def retries(self, route: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "sidecache_upstream_retries_total", {"route": route}
        )
        return value or 0.0

    async def get(self, path: str) -> bytes:
        response = await self.upstream.open("none", "GET", path, _headers(), None)
        async with response:
            return await response.read()


def _headers() -> CIMultiDict[str]:
    return CIMultiDict({"X-Forwarded-For": "127.0.0.1"})


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[Client]:
    config = _config(url)
    metrics = Metrics()
    upstream = Upstream(config.upstream, UpstreamLimiter(config, metrics), metrics)
    await upstream.start()
    try:
        yield Client(upstream, metrics)
    finally:
        await upstream.close()


@pytest.fixture
async def to_closing(closing: ClosingUpstream) -> AsyncIterator[Client]:
    async with _client(closing.url) as client:
        yield client


@pytest.fixture
async def to_never_answers(never_answers: ClosingUpstream) -> AsyncIterator[Client]:
    async with _client(never_answers.url) as client:
        yield client


async def _chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield bytes([start // size % 256]) * min(size, total - start)


# --- through Upstream ----------------------------------------------------------------------


async def test_a_cacheable_post_on_a_closed_pooled_connection_is_sent_again_once(
    closing, to_closing
):
    await to_closing.get("/warm")  # leaves one idle connection in the pool

    answer = await to_closing.upstream.fetch(
        "select", "POST", "/agents/select", _headers(), b'{"q": 1}', 64 * 1024
    )

    assert isinstance(answer, Buffered)
    assert answer.status == 200
    assert json.loads(answer.body) == {"connection": 1, "number": 1, "body_size": 8}
    assert [(s.connection, s.body) for s in closing.targets("/agents/select")] == [
        (0, b'{"q": 1}'),
        (1, b'{"q": 1}'),
    ]
    assert to_closing.retries("select") == 1


async def test_a_pass_through_get_on_a_closed_pooled_connection_is_sent_again_once(
    closing, to_closing
):
    await to_closing.get("/warm")

    answer = json.loads(await to_closing.get("/items/1"))

    assert answer["connection"] == 1
    assert [s.connection for s in closing.targets("/items/1")] == [0, 1]
    assert to_closing.retries("none") == 1


async def test_the_replay_takes_a_fresh_connection_not_another_pooled_one(closing, to_closing):
    # Two requests at once leave two idle connections, both of which the service will close
    # on their next request (as after a restart).
    await asyncio.gather(to_closing.get("/warm"), to_closing.get("/warm"))

    answer = json.loads(await to_closing.get("/items/1"))

    assert answer["connection"] == 2
    assert len(closing.targets("/items/1")) == 2
    assert to_closing.retries("none") == 1


async def test_a_pass_through_put_is_sent_again_with_its_whole_body(closing, to_closing):
    await to_closing.get("/warm")
    body = b"".join([chunk async for chunk in _chunks(20_000)])

    response = await to_closing.upstream.open("none", "PUT", "/items/1", _headers(), body)
    async with response:
        answer = json.loads(await response.read())

    assert answer == {"connection": 1, "number": 1, "body_size": len(body)}
    assert [s.body for s in closing.targets("/items/1")] == [body, body]
    assert to_closing.retries("none") == 1


async def test_a_pass_through_post_is_not_sent_again(closing, to_closing):
    await to_closing.get("/warm")

    with pytest.raises(UpstreamUnreachable):
        await to_closing.upstream.open("none", "POST", "/orders", _headers(), b"order")

    assert len(closing.targets("/orders")) == 1
    assert to_closing.retries("none") == 0


async def test_a_streamed_body_is_not_sent_again(closing, to_closing):
    await to_closing.get("/warm")

    with pytest.raises(UpstreamUnreachable):
        await to_closing.upstream.open("none", "PUT", "/items/1", _headers(), _chunks(20_000))

    assert [len(s.body) for s in closing.targets("/items/1")] == [20_000]
    assert to_closing.retries("none") == 0


async def test_a_failure_on_a_fresh_connection_is_not_retried(never_answers, to_never_answers):
    # GET: the method aiohttp itself would resend.
    with pytest.raises(UpstreamUnreachable):
        await to_never_answers.get("/items/1")

    assert len(never_answers.targets("/items/1")) == 1
    assert to_never_answers.retries("none") == 0


async def test_a_cacheable_post_is_not_retried_on_a_fresh_connection(
    never_answers, to_never_answers
):
    with pytest.raises(UpstreamUnreachable):
        await to_never_answers.upstream.fetch(
            "select", "POST", "/agents/select", _headers(), b"{}", 1024
        )

    assert len(never_answers.targets("/agents/select")) == 1
    assert to_never_answers.retries("select") == 0


async def test_no_retry_once_answer_bytes_arrived(breaks_off):
    async with _client(breaks_off.url) as client:
        await client.get("/warm")

        with pytest.raises(UpstreamUnreachable):
            await client.get("/items/1")

        assert len(breaks_off.targets("/items/1")) == 1
        assert client.retries("none") == 0


# --- through the proxy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "route"),
    [
        ("POST", "/agents/select", b'{"agent": "a"}', "select"),
        ("PUT", "/items/1", b"new item", "none"),
        ("GET", "/items/1", None, "none"),
    ],
    ids=["cacheable-post", "pass-through-put", "pass-through-get"],
)
async def test_proxy_answers_a_replayable_request_after_the_service_closed_its_connection(
    make_proxy, closing, method, path, body, route
):
    proxy = await make_proxy(upstream={"url": closing.url})
    warm = await proxy.client.get("/warm")
    assert warm.status == 200

    response = await proxy.client.request(method, path, data=body)

    assert response.status == 200
    assert json.loads(await response.read())["connection"] == 1
    assert [(s.method, s.body) for s in closing.targets(path)] == [(method, body or b"")] * 2
    assert _retries(proxy, route) == 1


async def test_proxy_does_not_replay_a_pass_through_post(make_proxy, closing):
    proxy = await make_proxy(upstream={"url": closing.url})
    assert (await proxy.client.get("/warm")).status == 200

    response = await proxy.client.post("/orders", data=b"one order")

    assert response.status == 502
    assert (await response.json())["error"] == "upstream_unreachable"
    assert len(closing.targets("/orders")) == 1
    assert _retries(proxy, "none") == 0


async def test_proxy_does_not_retry_a_fresh_connection_failure(make_proxy, never_answers):
    proxy = await make_proxy(upstream={"url": never_answers.url})

    response = await proxy.client.post("/agents/select", json={"agent": "a"})

    assert response.status == 502
    assert len(never_answers.targets("/agents/select")) == 1
    assert _retries(proxy, "select") == 0


def _retries(proxy, route: str) -> float:
    value = proxy.runtime.metrics.registry.get_sample_value(
        "sidecache_upstream_retries_total", {"route": route}
    )
    return value or 0.0


# --- the request target --------------------------------------------------------------------

RAW_TARGETS = ["/a%2Fb/%41?x=%41&y=a%20b", "/x/../y/./z?q=%7e&r=~", "/catalog/%41%2f?b=2&a=1"]


@pytest.mark.parametrize("target", RAW_TARGETS)
async def test_upstream_sends_the_target_byte_for_byte(upstream: FakeUpstream, target):
    async with _client(upstream.url) as client:
        assert echo_of(await client.get(target))["raw_path"] == target


@pytest.mark.parametrize("target", RAW_TARGETS)
async def test_proxy_forwards_the_target_byte_for_byte(make_proxy, upstream, target):
    proxy = await make_proxy()
    url = URL(str(proxy.client.make_url("/")).rstrip("/") + target, encoded=True)

    async with proxy.client.session.get(url) as response:
        assert response.status == 200
        assert echo_of(await response.read())["raw_path"] == target
