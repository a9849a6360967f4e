"""``mode: http`` routes: sidecache as an RFC 9111 shared cache, rule by rule."""

import email.utils
import time

import pytest

from tests.conftest import age_l1_entries
from tests.upstream import Canned, echo_of

HTTP_ROUTE = [{"name": "web", "method": "GET", "path": "/web/**", "mode": "http", "ttl": "1m"}]
PAGE = "/web/page"


def http_date(offset: float = 0.0) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.fixture
async def proxy(make_proxy, upstream):
    return await make_proxy(routes=HTTP_ROUTE)


def answer(upstream, headers: dict, body: bytes = b"page", path: str = PAGE) -> None:
    upstream.canned[path] = Canned(200, headers, body)


async def status_of(proxy, path: str = PAGE, headers=None) -> str:
    response = await proxy.client.get(path, headers=headers)
    return response.headers["Cache-Status"]


# --- freshness -----------------------------------------------------------------------------


async def test_max_age_sets_the_freshness_lifetime(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=30"})
    await proxy.client.get(PAGE)
    assert await status_of(proxy) == "sidecache; hit; detail=l1"
    age_l1_entries(proxy.runtime, 31)
    assert (await status_of(proxy)).startswith("sidecache; fwd=")


async def test_s_maxage_wins_over_max_age_for_a_shared_cache(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=1, s-maxage=100"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 50)
    assert await status_of(proxy) == "sidecache; hit; detail=l1"


async def test_expires_minus_date_is_the_lifetime_without_max_age(proxy, upstream):
    answer(upstream, {"Date": http_date(), "Expires": http_date(20)})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 10)
    assert await status_of(proxy) == "sidecache; hit; detail=l1"
    age_l1_entries(proxy.runtime, 15)
    assert (await status_of(proxy)).startswith("sidecache; fwd=")


async def test_an_age_from_upstream_counts_against_the_lifetime(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=100", "Age": "95"})
    await proxy.client.get(PAGE)
    hit = await proxy.client.get(PAGE)
    assert int(hit.headers["Age"]) >= 95
    age_l1_entries(proxy.runtime, 6)
    assert (await status_of(proxy)).startswith("sidecache; fwd=")


async def test_a_response_already_older_than_its_date_says_is_aged_by_date(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=100", "Date": http_date(-90)})
    await proxy.client.get(PAGE)
    hit = await proxy.client.get(PAGE)
    assert int(hit.headers["Age"]) >= 90


async def test_heuristic_freshness_is_a_tenth_of_the_last_modified_age(proxy, upstream):
    answer(upstream, {"Date": http_date(), "Last-Modified": http_date(-200)})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 15)
    assert await status_of(proxy) == "sidecache; hit; detail=l1"
    age_l1_entries(proxy.runtime, 10)  # 25 s > 10 % of 200 s
    assert (await status_of(proxy)).startswith("sidecache; fwd=")


# --- what a shared cache must not store ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "private, max-age=60"},
        {"Cache-Control": "max-age=60", "Vary": "*"},
        {"Cache-Control": "max-age=60", "Set-Cookie": "a=b"},
    ],
    ids=["no-store", "private", "vary-star", "set-cookie"],
)
async def test_responses_a_shared_cache_must_not_store(proxy, upstream, headers):
    answer(upstream, headers)
    await proxy.client.get(PAGE)
    assert await status_of(proxy) == "sidecache; fwd=miss"


async def test_an_authorized_request_is_stored_only_when_the_response_allows_it(proxy, upstream):
    auth = {"Authorization": "Bearer t"}
    answer(upstream, {"Cache-Control": "max-age=60"}, path="/web/plain")
    answer(upstream, {"Cache-Control": "public, max-age=60"}, path="/web/public")
    answer(upstream, {"Cache-Control": "s-maxage=60"}, path="/web/shared")
    for path in ("/web/plain", "/web/public", "/web/shared"):
        await proxy.client.get(path, headers=auth)
    assert await status_of(proxy, "/web/plain", auth) == "sidecache; fwd=miss"
    assert await status_of(proxy, "/web/public", auth) == "sidecache; hit; detail=l1"
    assert await status_of(proxy, "/web/shared", auth) == "sidecache; hit; detail=l1"


async def test_a_request_with_no_store_is_neither_answered_nor_stored(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"})
    no_store = {"Cache-Control": "no-store"}
    assert await status_of(proxy, headers=no_store) == "sidecache; fwd=bypass"
    assert await status_of(proxy) == "sidecache; fwd=miss; stored"


async def test_a_request_with_no_cache_goes_to_the_upstream(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"})
    await proxy.client.get(PAGE)
    assert await status_of(proxy, headers={"Cache-Control": "no-cache"}) == (
        "sidecache; fwd=request; stored"
    )
    assert upstream.calls[PAGE] == 2


# --- revalidation ------------------------------------------------------------------------


async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=10", "ETag": '"v1"', "X-Version": "old"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 11)
    upstream.canned[PAGE] = Canned(304, {"Cache-Control": "max-age=10", "X-Version": "new"}, b"")

    revalidated = await proxy.client.get(PAGE)

    assert revalidated.status == 200
    assert await revalidated.read() == b"page"
    assert revalidated.headers["X-Version"] == "new"
    assert revalidated.headers["Cache-Status"] == "sidecache; fwd=stale; fwd-status=304; stored"
    assert upstream.calls[PAGE] == 2
    again = await proxy.client.get(PAGE)
    assert again.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert again.headers["X-Version"] == "new"


async def test_revalidation_sends_the_stored_validators(proxy, upstream):
    modified = http_date(-3600)
    answer(upstream, {"Cache-Control": "max-age=10", "ETag": '"v1"', "Last-Modified": modified})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 11)
    del upstream.canned[PAGE]  # echo the request back
    response = await proxy.client.get(PAGE)
    sent = echo_of(await response.read())["headers"]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == modified


async def test_must_revalidate_forbids_serving_stale_even_on_error(make_proxy, upstream):
    routes = [{**HTTP_ROUTE[0], "stale_if_error": "1h"}]
    proxy = await make_proxy(routes=routes)
    answer(upstream, {"Cache-Control": "max-age=10, must-revalidate"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 11)
    await upstream.stop()
    response = await proxy.client.get(PAGE)
    assert response.status == 502


async def test_a_no_cache_response_is_revalidated_every_time(proxy, upstream):
    answer(upstream, {"Cache-Control": "no-cache", "ETag": '"v1"'})
    await proxy.client.get(PAGE)
    upstream.canned[PAGE] = Canned(304, {"ETag": '"v1"'}, b"")
    response = await proxy.client.get(PAGE)
    assert response.headers["Cache-Status"].startswith("sidecache; fwd=stale; fwd-status=304")
    assert await response.read() == b"page"


async def test_a_clients_conditional_request_is_answered_304_from_cache(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60", "ETag": '"v1"'})
    await proxy.client.get(PAGE)
    matching = await proxy.client.get(PAGE, headers={"If-None-Match": '"v1"'})
    other = await proxy.client.get(PAGE, headers={"If-None-Match": '"v0"'})
    assert matching.status == 304
    assert matching.headers["ETag"] == '"v1"'
    assert other.status == 200
    assert upstream.calls[PAGE] == 1


async def test_a_clients_conditional_is_not_forwarded_on_a_miss(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60", "ETag": '"v1"'})
    first = await proxy.client.get(PAGE, headers={"If-None-Match": '"v1"'})
    assert first.status == 304  # answered by sidecache from the full answer it stored
    plain = await proxy.client.get(PAGE)
    assert (plain.status, await plain.read()) == (200, b"page")


# --- request directives (RFC 9111 §5.2.1) ------------------------------------------------


async def test_max_stale_is_answered_from_a_stale_entry_the_origin_allows(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=30"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 40)
    stale = {"Cache-Control": "max-stale=60"}
    assert await status_of(proxy, headers=stale) == "sidecache; hit; detail=max-stale-l1"
    assert upstream.calls[PAGE] == 1


async def test_max_stale_does_not_override_must_revalidate(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=30, must-revalidate"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 40)
    assert (await status_of(proxy, headers={"Cache-Control": "max-stale"})).startswith(
        "sidecache; fwd="
    )
    assert upstream.calls[PAGE] == 2


async def test_only_if_cached_answers_504_without_asking_the_upstream(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=30"})
    only = {"Cache-Control": "only-if-cached"}
    refused = await proxy.client.get(PAGE, headers=only)
    assert refused.status == 504
    assert refused.headers["Cache-Status"] == "sidecache; detail=only-if-cached"
    assert upstream.calls[PAGE] == 0
    await proxy.client.get(PAGE)
    assert await status_of(proxy, headers=only) == "sidecache; hit; detail=l1"
    assert upstream.calls[PAGE] == 1


async def test_min_fresh_asks_the_upstream_for_an_entry_about_to_expire(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=30"})
    await proxy.client.get(PAGE)
    age_l1_entries(proxy.runtime, 20)
    assert await status_of(proxy, headers={"Cache-Control": "min-fresh=5"}) == (
        "sidecache; hit; detail=l1"
    )
    assert (await status_of(proxy, headers={"Cache-Control": "min-fresh=15"})).startswith(
        "sidecache; fwd="
    )
    assert upstream.calls[PAGE] == 2


# --- ranges (RFC 9110 §14) ----------------------------------------------------------------


async def test_a_range_is_answered_206_from_a_stored_complete_response(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60", "Accept-Ranges": "bytes"}, b"01234567890")
    await proxy.client.get(PAGE)
    part = await proxy.client.get(PAGE, headers={"Range": "bytes=-3"})
    assert part.status == 206
    assert await part.read() == b"890"
    assert part.headers["Content-Range"] == "bytes 8-10/11"
    assert part.headers["Accept-Ranges"] == "bytes"
    assert part.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    several = await proxy.client.get(PAGE, headers={"Range": "bytes=0-1,3-4"})
    assert (several.status, await several.read()) == (200, b"01234567890")
    whole = await proxy.client.get(PAGE)
    assert (whole.status, await whole.read()) == (200, b"01234567890")
    assert upstream.calls[PAGE] == 1


async def test_a_partial_answer_is_never_stored_nor_served_to_a_plain_get(proxy, upstream):
    upstream.canned[PAGE] = Canned(206, {"Cache-Control": "max-age=60"}, b"01")
    first = await proxy.client.get(PAGE, headers={"Range": "bytes=0-1"})
    assert first.status == 206
    assert first.headers["Cache-Status"] == "sidecache; fwd=miss"
    await proxy.client.get(PAGE)
    assert upstream.calls[PAGE] == 2


# --- Vary --------------------------------------------------------------------------------


async def test_response_vary_keeps_one_variant_per_request_header_value(proxy, upstream):
    upstream.canned[PAGE] = Canned(200, {"Cache-Control": "max-age=60", "Vary": "Accept-Language"})
    english, german = {"Accept-Language": "en"}, {"Accept-Language": "de"}
    assert await status_of(proxy, headers=english) == "sidecache; fwd=miss; stored"
    assert await status_of(proxy, headers=german) == "sidecache; fwd=miss; stored"
    assert await status_of(proxy, headers=english) == "sidecache; hit; detail=l1"
    assert await status_of(proxy, headers=german) == "sidecache; hit; detail=l1"
    assert upstream.calls[PAGE] == 2


async def test_a_coded_answer_without_vary_is_shared_only_with_the_same_accept_encoding(
    proxy, upstream
):
    upstream.canned[PAGE] = Canned(200, {"Cache-Control": "max-age=60", "Content-Encoding": "x-z"})
    coded, other = {"Accept-Encoding": "x-z"}, {"Accept-Encoding": "identity"}
    assert await status_of(proxy, headers=coded) == "sidecache; fwd=miss; stored"
    assert await status_of(proxy, headers=coded) == "sidecache; hit; detail=l1"
    assert await status_of(proxy, headers=other) == "sidecache; fwd=miss; stored"
    assert upstream.calls[PAGE] == 2


# --- HEAD and invalidation ---------------------------------------------------------------


async def test_head_is_answered_from_a_stored_get(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"}, b"0123456789")
    await proxy.client.get(PAGE)
    head = await proxy.client.head(PAGE)
    assert head.status == 200
    assert head.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert head.headers["Content-Length"] == "10"
    assert await head.read() == b""
    assert upstream.calls[PAGE] == 1


async def test_a_head_miss_is_forwarded_and_not_stored(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"})
    head = await proxy.client.head(PAGE)
    assert head.headers["Cache-Status"] == "sidecache; fwd=miss"
    assert await status_of(proxy) == "sidecache; fwd=miss; stored"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_successful_unsafe_request_invalidates_the_uri(proxy, upstream, method):
    answer(upstream, {"Cache-Control": "max-age=60"})
    await proxy.client.get(PAGE)
    await proxy.client.request(method, PAGE, data=b"change")
    await proxy.runtime.refreshes.wait(timeout=5)
    assert await status_of(proxy) == "sidecache; fwd=miss; stored"


async def test_an_unsafe_request_invalidates_its_location_too(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"}, path="/web/items/7")
    await proxy.client.get("/web/items/7")
    upstream.canned["/web/items"] = Canned(201, {"Location": "/web/items/7"}, b"")
    await proxy.client.post("/web/items", data=b"new item")
    await proxy.runtime.refreshes.wait(timeout=5)
    assert await status_of(proxy, "/web/items/7") == "sidecache; fwd=miss; stored"


async def test_a_failed_unsafe_request_invalidates_nothing(proxy, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"})
    await proxy.client.get(PAGE)
    upstream.canned[PAGE] = Canned(500, {}, b"")
    await proxy.client.post(PAGE, data=b"change")
    await proxy.runtime.refreshes.wait(timeout=5)
    assert await status_of(proxy) == "sidecache; hit; detail=l1"


# --- a catch-all route (method "*") ------------------------------------------------------

CATCH_ALL = [{"name": "all", "method": "*", "path": "/**", "mode": "http"}]


@pytest.fixture
async def catch_all(make_proxy, upstream):
    return await make_proxy(routes=CATCH_ALL)


async def test_a_catch_all_caches_get_and_passes_other_methods_through(catch_all, upstream):
    answer(upstream, {"Cache-Control": "max-age=60"})
    assert await status_of(catch_all) == "sidecache; fwd=miss; stored"
    assert await status_of(catch_all) == "sidecache; hit; detail=l1"
    options = await catch_all.client.options(PAGE)
    assert options.headers["Cache-Status"] == "sidecache; fwd=bypass"
    assert upstream.calls[PAGE] == 2


async def test_a_route_with_a_list_of_methods_caches_get_and_forwards_the_rest(
    make_proxy, upstream
):
    listed = [{"name": "web", "method": ["GET", "HEAD", "POST"], "path": "/**", "mode": "http"}]
    proxy = await make_proxy(routes=listed)
    answer(upstream, {"Cache-Control": "max-age=60"})
    assert await status_of(proxy) == "sidecache; fwd=miss; stored"
    assert (await proxy.client.head(PAGE)).headers["Cache-Status"] == "sidecache; hit; detail=l1"
    posted = await proxy.client.post(PAGE, data=b"")
    assert posted.headers["Cache-Status"] == "sidecache; fwd=bypass"  # never keyed as a GET
    assert await status_of(proxy) == "sidecache; fwd=miss; stored"  # the POST invalidated
    assert upstream.calls[PAGE] == 3


async def test_an_answer_without_freshness_is_not_served_from_cache(catch_all, upstream):
    answer(upstream, {})  # no default freshness (RFC 9111 §4.2.2 lets a cache choose none)
    await catch_all.client.get(PAGE)
    assert (await status_of(catch_all)).startswith("sidecache; fwd=")
    assert upstream.calls[PAGE] == 2


@pytest.mark.parametrize("method", ["POST", "M-SEARCH"])
async def test_an_unsafe_request_has_invalidated_before_its_answer_arrives(
    catch_all, upstream, method
):
    answer(upstream, {"Cache-Control": "max-age=60"})
    await catch_all.client.get(PAGE)
    await catch_all.client.request(method, PAGE, data=b"change")
    # No waiting for background work: the purge was done before the answer was sent.
    assert await status_of(catch_all) == "sidecache; fwd=miss; stored"


async def test_an_unsafe_request_invalidates_the_shared_tier_before_answering(
    make_proxy, upstream, redis_url
):
    routes, l2 = CATCH_ALL, {"url": redis_url}
    one = await make_proxy(routes=routes, cache={"l2": l2})
    # (Without an L1, the other replica reads what Redis holds: no pub/sub timing involved.)
    two = await make_proxy(routes=routes, cache={"l1": {"enabled": False}, "l2": l2})
    answer(upstream, {"Cache-Control": "max-age=60"})
    host = {"Host": "web.example"}  # (the same authority through either replica's port)
    await one.client.get(PAGE, headers=host)
    assert await one.runtime.cache.flush(timeout=5)  # the L2 write is done
    assert await status_of(two, headers=host) == "sidecache; hit; detail=l2"
    await one.client.delete(PAGE, headers=host)
    assert await status_of(two, headers=host) == "sidecache; fwd=miss; stored"


async def test_stale_is_served_when_the_upstream_is_unreachable_where_allowed(catch_all, upstream):
    answer(upstream, {"Cache-Control": "max-age=10"})
    answer(upstream, {"Cache-Control": "max-age=10, must-revalidate"}, path="/web/strict")
    await catch_all.client.get(PAGE)
    await catch_all.client.get("/web/strict")
    age_l1_entries(catch_all.runtime, 11)
    await upstream.stop()
    stale = await catch_all.client.get(PAGE)
    strict = await catch_all.client.get("/web/strict")
    assert (stale.status, await stale.read()) == (200, b"page")
    assert stale.headers["Cache-Status"].startswith("sidecache; fwd=stale")
    assert strict.status == 502
