"""Attacks on the key: no value a client controls is both forwarded and left out of the key.
The upstream reflects what it received, as a service that builds links from it would."""

from __future__ import annotations

import asyncio

import pytest

from tests.upstream import echo_of

SELECT = "/agents/select"
TASK = {"task": "refund my order"}


async def ask(proxy, headers=None, path=SELECT) -> tuple[str, dict]:
    response = await proxy.client.post(path, json=TASK, headers=headers)
    return response.headers["Cache-Status"], echo_of(await response.read())


@pytest.mark.parametrize(
    "forged",
    [
        {"X-Forwarded-Host": "evil.example"},
        {"X-Forwarded-Proto": "https"},
        {"Forwarded": "host=evil.example;proto=https"},
        {"X-Forwarded-Port": "4443"},
        {"X-Forwarded-Prefix": "/evil"},
        {"X-Original-URL": "/admin"},
        {"X-Rewrite-URL": "/admin"},
        {"X-Host": "evil.example"},
        {"X-Real-IP": "10.6.6.6"},
    ],
    ids=lambda headers: next(iter(headers)),
)
async def test_a_forged_forwarding_header_never_reaches_the_upstream(make_proxy, upstream, forged):
    proxy = await make_proxy()

    _, seen = await ask(proxy, forged)

    name, value = next(iter(forged.items()))
    assert seen["headers"].get(name) != value
    assert seen["headers"]["X-Forwarded-Proto"] == "http"
    assert seen["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{proxy.client.port}"


async def test_the_forwarding_headers_say_what_sidecache_received(make_proxy, upstream):
    proxy = await make_proxy()

    _, seen = await ask(proxy, {"X-Forwarded-For": "10.1.1.1"})

    assert seen["headers"]["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
    assert seen["headers"]["Host"] == f"127.0.0.1:{upstream.port}"


async def test_an_answer_for_a_forged_host_is_never_served_to_other_clients(make_proxy, upstream):
    proxy = await make_proxy()
    status, poisoned = await ask(proxy, {"Host": "evil.example"})
    assert poisoned["headers"]["X-Forwarded-Host"] == "evil.example"

    status, seen = await ask(proxy)

    assert status == "sidecache; fwd=miss; stored"
    assert seen["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{proxy.client.port}"


async def raw_post(proxy, target: bytes, host: bytes = b"127.0.0.1") -> dict:
    """POST the task with a request line and ``Host`` as given; the upstream's echo."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.client.port)
    body = b'{"task": "refund my order"}'
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (target, host, len(body), body)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    echo = echo_of(await asyncio.wait_for(reader.readexactly(length), 10))
    writer.close()
    return echo


async def test_an_absolute_form_target_is_keyed_by_its_authority(make_proxy, upstream):
    proxy = await make_proxy()
    poisoned = await raw_post(proxy, b"http://evil.example/agents/select")
    assert poisoned["headers"]["X-Forwarded-Host"] == "evil.example"
    assert poisoned["path"] == SELECT

    status, seen = await ask(proxy)

    assert status == "sidecache; fwd=miss; stored"
    assert seen["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{proxy.client.port}"


async def test_a_trusted_proxy_is_believed_and_its_values_are_keyed(make_proxy, upstream):
    proxy = await make_proxy(server={"trusted_proxies": ["127.0.0.0/8"]})
    await ask(proxy, {"X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https"})

    status, seen = await ask(proxy, {"X-Forwarded-Host": "other.example"})

    assert status == "sidecache; fwd=miss; stored"
    assert seen["headers"]["X-Forwarded-Host"] == "other.example"
    assert seen["headers"]["X-Forwarded-Proto"] == "http"


@pytest.mark.parametrize(
    "header",
    [
        {"X-HTTP-Method-Override": "DELETE"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"X-HTTP-Method": "PUT"},
    ],
    ids=lambda headers: next(iter(headers)),
)
async def test_headers_that_change_what_a_request_means_are_keyed(make_proxy, upstream, header):
    proxy = await make_proxy()
    await ask(proxy, header)

    status, seen = await ask(proxy)

    assert status == "sidecache; fwd=miss; stored"
    name = next(iter(header))
    assert seen["headers"].get(name) != header[name]


async def test_the_path_is_forwarded_exactly_as_it_was_keyed(make_proxy, upstream):
    route = {"name": "any", "method": "POST", "path": "/**"}
    proxy = await make_proxy(routes=[route])
    escaped = await raw_post(proxy, b"/agents/%73elect?q=%41")

    status, plain = await ask(proxy, path=SELECT + "?q=A")

    assert escaped["raw_path"] == "/agents/%73elect?q=%41"
    assert status == "sidecache; fwd=miss; stored"
    assert plain["raw_path"] == "/agents/select?q=A"


async def test_a_json_body_with_a_lone_surrogate_is_forwarded_and_keyed_by_its_bytes(
    make_proxy, upstream
):
    proxy = await make_proxy()
    body = b'{"task": "\\ud800"}'

    first = await proxy.client.post(SELECT, data=body)
    second = await proxy.client.post(SELECT, data=body)
    other = await proxy.client.post(SELECT, data=b'{"task": "\\ud801"}')

    assert first.status == 200
    assert echo_of(await first.read())["body_size"] == len(body)
    assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert other.headers["Cache-Status"] == "sidecache; fwd=miss; stored"


async def test_a_body_naming_a_member_twice_is_keyed_by_its_bytes(make_proxy, upstream):
    """Parsers disagree on {"task": "a", "task": "b"} (first or last wins): it must not share
    the key of either reading."""
    proxy = await make_proxy()
    await proxy.client.post(SELECT, data=b'{"task": "evil", "task": "refund my order"}')

    status, _ = await ask(proxy)

    assert status == "sidecache; fwd=miss; stored"
