"""The L1 fast path: raw HTTP/1.1 on the proxy port, answered exactly as the handler would,
and every request it does not fully understand left to aiohttp."""

import asyncio

import pytest

from tests.upstream import echo_of

SELECT = "/agents/select"
BODY = b'{"task": "refund my order"}'


def post(body: bytes = BODY, extra: bytes = b"", path: str = SELECT) -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: sidecache\r\n"
        b"Content-Type: application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    status, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status.encode(), headers, body


@pytest.fixture
async def warm(make_proxy, upstream):
    proxy = await make_proxy()
    headers = {"Host": "sidecache", "Content-Type": "application/json"}  # as post() sends
    await proxy.client.post(SELECT, data=BODY, headers=headers)
    return proxy


async def connect(proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.client.server.port)


def counted(proxy, result: str) -> float:
    return proxy.runtime.metrics.cache_operations.labels("l1", "get", result)._value.get()


async def test_a_hit_is_answered_on_the_fast_path_like_the_handler_would(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(post())
    status, headers, body = await read_response(reader)
    writer.close()
    assert status == b"HTTP/1.1 200 OK"
    assert headers["cache-status"] == "sidecache; hit; detail=l1"
    assert headers["age"] == "0"
    assert headers["content-type"].startswith("application/json")
    assert echo_of(body)["n"] == 1
    assert upstream.calls[SELECT] == 1
    assert (counted(warm, "hit"), counted(warm, "miss")) == (1, 1)
    stats = await (await warm.admin.get("/stats")).json()
    assert stats["routes"]["select"]["by_tier"]["l1"] == 1


async def test_pipelined_hits_are_answered_in_order(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(post() + post() + post())
    answers = [await read_response(reader) for _ in range(3)]
    writer.close()
    assert [a[1]["cache-status"] for a in answers] == ["sidecache; hit; detail=l1"] * 3


async def test_a_miss_after_a_hit_on_one_connection_goes_to_the_handler(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(post() + post(b'{"task": "something new"}') + post())
    answers = [await read_response(reader) for _ in range(3)]
    writer.close()
    statuses = [a[1]["cache-status"] for a in answers]
    assert statuses == [
        "sidecache; hit; detail=l1",
        "sidecache; fwd=miss; stored",
        "sidecache; hit; detail=l1",
    ]
    assert upstream.calls[SELECT] == 2
    assert counted(warm, "miss") == 2  # each lookup counted once, not again by the handler


async def test_a_request_arriving_byte_by_byte_is_answered(warm, upstream):
    reader, writer = await connect(warm)
    for byte in post():
        writer.write(bytes([byte]))
        await writer.drain()
    _status, headers, _ = await read_response(reader)
    writer.close()
    assert headers["cache-status"] == "sidecache; hit; detail=l1"


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(extra=b"Connection: close\r\n"),
        b"POST /agents/select HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1b\r\n" + BODY + b"\r\n0\r\n\r\n",
        post().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        post(path="/agents/%73elect"),
    ],
    ids=["connection-close", "chunked", "http-1.0", "percent-encoded"],
)
async def test_unusual_requests_are_served_by_aiohttp(warm, upstream, request_bytes):
    reader, writer = await connect(warm)
    writer.write(request_bytes)
    status, _headers, body = await read_response(reader)
    writer.close()
    assert status.split(b" ")[1] == b"200"
    assert echo_of(body)["path"] == SELECT


async def test_a_malformed_request_gets_aiohttps_400(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(b"POST /agents/select HTTP/1.1\r\nBad Header\r\nContent-Length: 0\r\n\r\n")
    status, _, _ = await read_response(reader)
    writer.close()
    assert status.split(b" ")[1] == b"400"
    assert upstream.calls[SELECT] == 1


async def test_head_is_not_answered_with_a_body(make_proxy, upstream):
    proxy = await make_proxy(routes=[{"name": "any", "method": "*", "path": "/agents/**"}])
    await proxy.client.get("/agents/list")
    response = await proxy.client.head("/agents/list")
    assert await response.read() == b""


async def test_an_idle_fast_connection_is_closed_on_shutdown(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(post())
    await read_response(reader)
    await warm.client.close()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()


async def test_an_l2_hit_is_answered_on_the_fast_path(make_proxy, upstream, redis_url):
    proxy = await make_proxy(cache={"l1": {"enabled": False}, "l2": {"url": redis_url}})
    headers = {"Host": "sidecache", "Content-Type": "application/json"}  # as post() sends
    first = await proxy.client.post(SELECT, data=BODY, headers=headers)
    stored = await first.read()
    await proxy.runtime.cache.flush()
    reader, writer = await connect(proxy)
    writer.write(post() + post())
    answers = [await read_response(reader) for _ in range(2)]
    writer.close()
    assert [a[1]["cache-status"] for a in answers] == ["sidecache; hit; detail=l2"] * 2
    for status, hit_headers, body in answers:  # the stored answer, as stored
        assert status == b"HTTP/1.1 200 OK"
        assert body == stored
        assert hit_headers["content-type"] == first.headers["Content-Type"]
        assert hit_headers["content-length"] == str(len(stored))
        assert hit_headers["age"].isdigit()
    l2 = proxy.runtime.metrics.cache_operations
    assert l2.labels("l2", "get", "hit")._value.get() == 2
    assert l2.labels("l2", "get", "miss")._value.get() == 1  # the first request's, once


async def test_an_l2_miss_on_the_fast_path_is_counted_once(make_proxy, upstream, redis_url):
    proxy = await make_proxy(cache={"l2": {"url": redis_url}})
    reader, writer = await connect(proxy)
    writer.write(post(b'{"task": "never seen"}'))
    _status, headers, _body = await read_response(reader)
    writer.close()
    assert headers["cache-status"] == "sidecache; fwd=miss; stored"
    operations = proxy.runtime.metrics.cache_operations
    assert operations.labels("l2", "get", "miss")._value.get() == 1
    assert counted(proxy, "miss") == 1


def fast_connections(proxy) -> int:
    """Connections the fast path still serves (not handed to aiohttp)."""
    return len(proxy.client.server.runner.server.fast_connections)


async def test_a_bare_lf_request_gets_aiohttps_400(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(b"GET /agents/select HTTP/1.1\nHost: sidecache\n\n")
    status, _, _ = await read_response(reader)
    writer.close()
    assert status.split(b" ")[1] == b"400"


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(extra=b"Bad Header: x\r\n"),
        post(extra=b"X-Paren(: x\r\n"),
        post(extra=b"X-Space-Before-Colon : x\r\n"),
        post(extra=b"X-Nul: a\x00b\r\n"),
        post(extra=b"Host: sidecache\r\n"),
        post().replace(b"Host: sidecache\r\n", b""),
        post(extra=b"Content-Length: 27\r\n"),
        post(extra=b"X-Folded: a\r\n b\r\n"),
    ],
    ids=[
        "space-in-name",
        "paren-in-name",
        "space-before-colon",
        "nul-in-value",
        "duplicate-host",
        "no-host",
        "duplicate-content-length",
        "obs-fold",
    ],
)
async def test_a_request_aiohttp_refuses_is_not_answered_from_cache(warm, upstream, request_bytes):
    reader, writer = await connect(warm)
    writer.write(request_bytes)
    status, headers, _ = await read_response(reader)
    writer.close()
    assert status.split(b" ")[1] == b"400"
    assert "cache-status" not in headers
    assert warm.runtime.metrics.malformed_requests._value.get() == 1


@pytest.mark.parametrize(
    "extra",
    [
        "User-Agent: café/1.0\r\n".encode(),
        b"Accept: text/plain\r\nAccept: application/json\r\n",
        b"X-Trailing-Space: a \t\r\n",
    ],
    ids=["utf8-value", "repeated-header", "trailing-whitespace"],
)
async def test_a_request_aiohttp_accepts_is_answered_on_the_fast_path(warm, upstream, extra):
    reader, writer = await connect(warm)
    writer.write(post(extra=extra) + post())
    answers = [await read_response(reader) for _ in range(2)]
    assert fast_connections(warm) == 2  # this one and the warm-up's: neither handed over
    writer.close()
    assert [a[1]["cache-status"] for a in answers] == ["sidecache; hit; detail=l1"] * 2


async def test_a_request_split_between_head_and_body_is_answered_on_the_fast_path(warm, upstream):
    reader, writer = await connect(warm)
    request = post()
    cut = request.index(b"\r\n\r\n") + 2
    for part in (request[:cut], request[cut : cut + 3], request[cut + 3 : -4], request[-4:]):
        writer.write(part)
        await writer.drain()
    _status, headers, _ = await read_response(reader)
    assert fast_connections(warm) == 2  # this one and the warm-up's: neither handed over
    writer.close()
    assert headers["cache-status"] == "sidecache; hit; detail=l1"


async def read_chunked_or_sized(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    """One response, whether its body is sized or chunked."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    headers = {}
    for line in head[:-4].decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") != "chunked":
        return headers, await reader.readexactly(int(headers.get("content-length", "0")))
    body = b""
    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return headers, body


async def test_one_connection_serves_hit_miss_hit_pass_through_hit_in_order(warm, upstream):
    reader, writer = await connect(warm)
    new_key = post(b'{"task": "never asked before"}')
    passing = b"GET /not-cached?x=1 HTTP/1.1\r\nHost: sidecache\r\n\r\n"
    streamed = b"GET /big?size=200000&chunked=1 HTTP/1.1\r\nHost: sidecache\r\n\r\n"

    writer.write(post() + new_key + post() + passing + post() + streamed + post())
    answers = [await read_chunked_or_sized(reader) for _ in range(7)]

    assert fast_connections(warm) == 2  # this one and the warm-up's: neither handed over
    writer.close()
    statuses = [headers["cache-status"] for headers, _ in answers]
    assert statuses == [
        "sidecache; hit; detail=l1",
        "sidecache; fwd=miss; stored",
        "sidecache; hit; detail=l1",
        "sidecache; fwd=bypass",
        "sidecache; hit; detail=l1",
        "sidecache; fwd=bypass",
        "sidecache; hit; detail=l1",
    ]
    assert echo_of(answers[3][1])["path"] == "/not-cached"
    assert answers[5][1] == (bytes(range(256)) * 256 * 4)[:200000]
    assert upstream.calls[SELECT] == 2


@pytest.mark.parametrize(
    "handed_over",
    [
        b"GET /not-cached HTTP/1.1\r\nHost: sidecache\r\nConnection: close\r\n\r\n",
        b"GET /not-cached HTTP/1.0\r\nHost: sidecache\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_hits_answered_in_the_turn_of_a_hand_over_arrive_before_its_answer(
    warm, upstream, handed_over
):
    # The hits' answers wait for the end of the loop's turn (proxy/outbox.py); the request
    # aiohttp takes over in that same turn must not answer first.
    reader, writer = await connect(warm)
    writer.write(post() + post() + handed_over)
    answers = [await read_response(reader) for _ in range(3)]
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # then aiohttp closes
    writer.close()
    statuses = [headers["cache-status"] for _, headers, _ in answers]
    assert statuses == ["sidecache; hit; detail=l1"] * 2 + ["sidecache; fwd=bypass"]
    assert echo_of(answers[2][2])["path"] == "/not-cached"


async def test_a_client_gone_with_answers_held_does_not_disturb_the_next(warm, upstream):
    reader, writer = await connect(warm)
    writer.write(post() * 20)
    writer.transport.abort()  # gone while its answers may still be held
    reader, writer = await connect(warm)  # the next client is answered as ever
    writer.write(post())
    _status, headers, _ = await read_response(reader)
    writer.close()
    assert headers["cache-status"] == "sidecache; hit; detail=l1"


def known_heads(proxy) -> dict:
    return proxy.client.server.runner.server.heads


async def test_a_head_read_before_is_not_parsed_again_and_the_memo_stays_bounded(warm, upstream):
    from proxy.fastpath import HEAD_MEMO, MAX_MEMO_HEAD

    reader, writer = await connect(warm)
    before = len(known_heads(warm))
    writer.write(post() + post())
    for _ in range(2):
        assert (await read_response(reader))[1]["cache-status"] == "sidecache; hit; detail=l1"
    assert len(known_heads(warm)) <= before + 1  # the two identical heads: one entry
    remembered = len(known_heads(warm))
    long_head = post(extra=b"X-Pad: " + b"a" * MAX_MEMO_HEAD + b"\r\n")
    writer.write(long_head)
    assert (await read_response(reader))[1]["cache-status"] == "sidecache; hit; detail=l1"
    assert len(known_heads(warm)) == remembered  # too long to remember
    for i in range(HEAD_MEMO + 10):
        writer.write(post(extra=b"X-N: %d\r\n" % i))
        await read_response(reader)
        assert len(known_heads(warm)) <= HEAD_MEMO
    writer.close()
