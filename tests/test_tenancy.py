"""Attacks on tenancy: a shared answer only reaches a client who would have got the same
answer from the service. The upstreams here answer per user, as real services do."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.conftest import wait_until

SELECT = "/agents/select"
TASK = {"task": "refund my order"}


class PerUserUpstream:
    """Answers with whoever the request says it is (cookie, API key, every Authorization
    line), ``Vary: Cookie``; ``/search`` gzips for clients that accept it. Holds every answer
    until ``release`` is set, so concurrent requests overlap for certain."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(SELECT, self._select)
        app.router.add_route("*", "/search", self._search)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _select(self, request: web.Request) -> web.Response:
        self.calls += 1
        await self.release.wait()
        who = {
            "cookie": request.headers.get("Cookie", ""),
            "api_key": request.headers.get("X-Api-Key", ""),
            "authorization": request.headers.getall("Authorization", []),
        }
        return web.json_response(who, headers={"Vary": "Cookie"})

    async def _search(self, request: web.Request) -> web.Response:
        self.calls += 1
        await self.release.wait()
        body = json.dumps({"results": ["a", "b"]}).encode()
        headers = {"Vary": "Accept-Encoding", "Content-Type": "application/json"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=gzip.compress(body), headers=headers | gzip_encoding())
        return web.Response(body=body, headers=headers)


def gzip_encoding() -> dict[str, str]:
    return {"Content-Encoding": "gzip"}


@pytest.fixture
async def per_user() -> AsyncIterator[PerUserUpstream]:
    server = PerUserUpstream()
    await server.start()
    yield server
    server.release.set()
    await server.stop()


async def as_user(proxy, headers) -> tuple[str, dict]:
    response = await proxy.client.post(SELECT, json=TASK, headers=headers)
    return response.headers["Cache-Status"], await response.json()


# --- the tenant partition ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"Cookie": "session=user-1"}, {"Cookie": "session=user-2"}),
        ({"Cookie": "session=user-1"}, {}),
        ({"X-Api-Key": "key-1"}, {"X-Api-Key": "key-2"}),
        ({"X-Api-Key": "key-1"}, {}),
        ({"Proxy-Authorization": "Basic dTE6cA=="}, {}),
    ],
    ids=["cookie", "cookie-vs-none", "api-key", "api-key-vs-none", "proxy-authorization"],
)
async def test_clients_with_different_credentials_never_share_an_entry(
    make_proxy, per_user, first, second
):
    proxy = await make_proxy(upstream={"url": per_user.url})
    await as_user(proxy, first)

    status, answer = await as_user(proxy, second)

    assert status == "sidecache; fwd=miss; stored"
    assert answer["cookie"] == second.get("Cookie", "")
    assert answer["api_key"] == second.get("X-Api-Key", "")
    assert per_user.calls == 2


async def test_the_same_credentials_share_an_entry(make_proxy, per_user):
    proxy = await make_proxy(upstream={"url": per_user.url})
    await as_user(proxy, {"Cookie": "session=user-1"})

    status, answer = await as_user(proxy, {"Cookie": "session=user-1"})

    assert status == "sidecache; hit; detail=l1"
    assert answer["cookie"] == "session=user-1"


async def test_every_authorization_line_is_part_of_the_partition(make_proxy, per_user):
    proxy = await make_proxy(upstream={"url": per_user.url})
    both = [("Authorization", "Bearer alice"), ("Authorization", "Bearer mallory")]
    response = await proxy.client.post(SELECT, json=TASK, headers=both)
    assert (await response.json())["authorization"] == ["Bearer alice", "Bearer mallory"]

    status, answer = await as_user(proxy, {"Authorization": "Bearer alice"})

    assert status == "sidecache; fwd=miss; stored"
    assert answer["authorization"] == ["Bearer alice"]


async def test_a_route_narrowed_to_one_cookie_shares_across_other_cookies(make_proxy, per_user):
    route = {
        "name": "select",
        "path": SELECT,
        "tenant": {"headers": ["Authorization", "Cookie"], "cookies": ["session"]},
    }
    proxy = await make_proxy(upstream={"url": per_user.url}, routes=[route])
    await as_user(proxy, {"Cookie": "session=u1; theme=dark"})

    same_session, _ = await as_user(proxy, {"Cookie": "theme=light; session=u1"})
    other_session, _ = await as_user(proxy, {"Cookie": "session=u2; theme=dark"})

    assert same_session == "sidecache; hit; detail=l1"
    assert other_session == "sidecache; fwd=miss; stored"


# --- coalescing never widens who sees an answer --------------------------------------------


def flights(proxy):
    """The proxy's single-flight table (to wait until every request has joined)."""
    return proxy.client.server.runner.server.proxy._flights


async def test_concurrent_users_of_a_per_user_answer_each_get_their_own(make_proxy, per_user):
    # Cookie left out of the partition on purpose: only the answer's Vary says it is per user.
    route = {"name": "select", "path": SELECT, "tenant": {"headers": ["Authorization"]}}
    proxy = await make_proxy(upstream={"url": per_user.url}, routes=[route])
    per_user.release.clear()
    users = [{"Cookie": f"session=user-{i}"} for i in range(3)]

    asked = [asyncio.ensure_future(as_user(proxy, user)) for user in users]
    await wait_until(lambda: _true(flights(proxy).waiting == 3))
    per_user.release.set()
    answers = await asyncio.gather(*asked)

    assert [answer["cookie"] for _, answer in answers] == [u["Cookie"] for u in users]
    assert not any("collapsed" in status for status, _ in answers)
    assert per_user.calls == 3


@pytest.mark.parametrize("mode", ["json", "http"])
async def test_a_waiter_that_does_not_accept_gzip_never_gets_the_gzip_answer(
    make_proxy, per_user, mode
):
    route = {"name": "search", "method": "POST" if mode == "json" else "GET", "path": "/search"}
    proxy = await make_proxy(upstream={"url": per_user.url}, routes=[route | {"mode": mode}])
    per_user.release.clear()
    method = route["method"]

    async def ask(accept: str) -> tuple[str | None, bytes]:
        headers = {"Accept-Encoding": accept}
        async with proxy.client.request(method, "/search", headers=headers) as response:
            return response.headers.get("Content-Encoding"), await response.read()

    gzip_first = asyncio.ensure_future(ask("gzip"))
    await wait_until(lambda: _true(flights(proxy).waiting == 1))
    plain = asyncio.ensure_future(ask("identity"))
    await wait_until(lambda: _true(flights(proxy).waiting == 2))
    per_user.release.set()
    (_, _), (encoding, body) = await asyncio.gather(gzip_first, plain)

    assert encoding is None
    assert json.loads(body) == {"results": ["a", "b"]}


async def _true(value: bool) -> bool:
    return value
