"""Everything not configured as cacheable passes through untouched, streamed both ways."""

import asyncio
import hashlib
import os

import pytest

from tests.upstream import echo_of


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"])
async def test_any_method_path_and_query_reach_the_upstream(make_proxy, upstream, method):
    proxy = await make_proxy()
    response = await proxy.client.request(method, "/v1/things/42?b=2&a=1&a=0", data=b"payload")
    echo = echo_of(await response.read())
    assert response.status == 200
    assert response.headers["Cache-Status"] == "sidecache; fwd=bypass"
    assert (echo["method"], echo["path"], echo["query"]) == (method, "/v1/things/42", "b=2&a=1&a=0")
    assert echo["body_size"] == len(b"payload")


async def test_hop_by_hop_headers_are_removed_and_forwarding_headers_set(make_proxy):
    proxy = await make_proxy()
    response = await proxy.client.get(
        "/anything",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Proxy-Authorization": "Basic abc",
            "X-Custom": "kept",
            "X-Forwarded-For": "203.0.113.9",
        },
    )
    headers = echo_of(await response.read())["headers"]
    assert "X-Secret-Hop" not in headers
    assert "Proxy-Authorization" not in headers
    assert headers["X-Custom"] == "kept"
    assert headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"].startswith("127.0.0.1:")


async def test_a_large_request_body_is_streamed_to_the_upstream(make_proxy):
    proxy = await make_proxy()
    payload = os.urandom(8 * 1024 * 1024)

    async def chunks():
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]

    response = await proxy.client.put("/upload", data=chunks())
    echo = echo_of(await response.read())
    assert echo["body_size"] == len(payload)
    assert echo["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_a_large_response_is_streamed_to_the_client(make_proxy):
    proxy = await make_proxy()
    size = 32 * 1024 * 1024
    response = await proxy.client.get(f"/big?size={size}")
    received = 0
    async for chunk in response.content.iter_any():
        received += len(chunk)
    assert response.headers["Content-Length"] == str(size)
    assert received == size


async def test_server_sent_events_reach_the_client_before_the_upstream_finishes(
    make_proxy, upstream
):
    proxy = await make_proxy()
    response = await proxy.client.post("/sse")
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    assert first == b"data: first\n\n"
    assert not upstream.sse_release.is_set()
    upstream.sse_release.set()
    rest = await asyncio.wait_for(response.content.read(), timeout=5)
    assert rest == b"data: second\n\n"
    assert response.headers["Content-Type"] == "text/event-stream"


async def test_upstream_status_and_headers_pass_through(make_proxy, upstream):
    from tests.upstream import Canned

    upstream.canned["/teapot"] = Canned(418, {"X-Upstream": "yes"}, b"short and stout")
    proxy = await make_proxy()
    response = await proxy.client.get("/teapot")
    assert response.status == 418
    assert response.headers["X-Upstream"] == "yes"
    assert await response.read() == b"short and stout"


async def test_compressed_bodies_pass_through_without_being_decoded(make_proxy, upstream):
    import gzip

    from tests.upstream import Canned

    packed = gzip.compress(b'{"hello": "world"}')
    upstream.canned["/gz"] = Canned(200, {"Content-Encoding": "gzip"}, packed)
    proxy = await make_proxy()
    response = await proxy.client.get(
        "/gz", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert await response.read() == packed
