"""``mode: openai`` end to end: the official ``openai`` client pointed at sidecache, in front
of a real OpenAI-compatible upstream (tests/llm_upstream.py) that records what reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import Proxy, wait_until
from tests.llm_upstream import FakeModel

CHAT = "/v1/chat/completions"
ROUTES = [
    {"name": "chat", "path": "/v1/chat/completions", "mode": "openai"},
    {"name": "embeddings", "path": "/v1/embeddings", "mode": "openai"},
    {"name": "sampled", "path": "/sampled/v1/chat/completions", "mode": "openai", "sampled": True},
]
ASK = {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0}
WITH_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
#: Requests that reach the fast front end, and ones it hands to aiohttp's (Connection: close).
FRONT_ENDS = {"fast": {}, "aiohttp": {"Connection": "close"}}


@pytest.fixture
async def model() -> AsyncIterator[FakeModel]:
    server = FakeModel()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(make_proxy, model) -> AsyncIterator[Proxy]:
    proxy = await make_proxy(upstream={"url": model.url}, routes=ROUTES)
    yield proxy
    for ai in _clients.pop(id(proxy), []):
        await ai.close()


_clients: dict[int, list[AsyncOpenAI]] = {}


def client(proxy: Proxy, key: str = "sk-tenant-a", prefix: str = "", **headers: str):
    """The official client pointed at the proxy (closed when the test ends)."""
    base = str(proxy.client.make_url(f"{prefix}/v1"))
    ai = AsyncOpenAI(base_url=base, api_key=key, max_retries=0, default_headers=headers)
    _clients.setdefault(id(proxy), []).append(ai)
    return ai


async def ask(ai: AsyncOpenAI, **fields: Any) -> tuple[str, Any]:
    """A non-streamed completion: its Cache-Status and the parsed completion."""
    raw = await ai.chat.completions.with_raw_response.create(**{**ASK, **fields})
    return raw.headers["Cache-Status"], raw.parse()


async def ask_stream(ai: AsyncOpenAI, **fields: Any) -> tuple[str, list[dict[str, Any]]]:
    """A streamed completion: its Cache-Status and every chunk, as dicts."""
    raw = await ai.chat.completions.with_raw_response.create(**{**ASK, "stream": True, **fields})
    return raw.headers["Cache-Status"], [chunk.model_dump() async for chunk in raw.parse()]


def text_of(chunks: list[dict[str, Any]], field: str = "content") -> str:
    return "".join(c["choices"][0]["delta"].get(field) or "" for c in chunks if c["choices"])


def usage_of(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((c["usage"] for c in chunks if c.get("usage")), None)


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    return proxy.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_repeated_deterministic_completion_is_answered_from_cache(proxy, model):
    ai = client(proxy)
    first_status, first = await ask(ai)
    second_status, second = await ask(ai)
    assert first_status == "sidecache; fwd=miss; stored"
    assert second_status == "sidecache; hit; detail=l1"
    assert second.model_dump() == first.model_dump()
    assert model.calls[CHAT] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"tools": TOOLS},
        {"tools": TOOLS, "tool_choice": "none"},
        {"max_tokens": 50},
        {"response_format": {"type": "json_object"}},
    ],
)
async def test_the_key_covers_parameters_that_change_the_answer(proxy, model, change):
    ai = client(proxy)
    base = {"tools": TOOLS} if "tool_choice" in change else {}
    await ask(ai, **base)
    status, _ = await ask(ai, **change)
    assert status == "sidecache; fwd=miss; stored"
    assert model.calls[CHAT] == 2


async def test_who_asks_and_their_tags_are_not_part_of_the_key(proxy, model):
    ai = client(proxy)
    await ask(ai, user="alice", metadata={"run": "1"})
    status, _ = await ask(ai, user="bob", metadata={"run": "2"})
    assert status == "sidecache; hit; detail=l1"
    assert model.calls[CHAT] == 1


async def test_another_tenant_never_gets_the_entry(proxy, model):
    await ask(client(proxy, key="sk-tenant-a"))
    status, _ = await ask(client(proxy, key="sk-tenant-b"))
    assert status == "sidecache; fwd=miss; stored"
    assert model.calls[CHAT] == 2


async def test_another_organization_or_project_of_one_tenant_never_gets_the_entry(proxy, model):
    await ask(client(proxy, **{"OpenAI-Organization": "org-a"}))
    other_org, _ = await ask(client(proxy, **{"OpenAI-Organization": "org-b"}))
    other_project, _ = await ask(
        client(proxy, **{"OpenAI-Organization": "org-a", "OpenAI-Project": "p"})
    )
    again, _ = await ask(client(proxy, **{"OpenAI-Organization": "org-a"}))

    assert other_org == other_project == "sidecache; fwd=miss; stored"
    assert again == "sidecache; hit; detail=l1"
    assert model.calls[CHAT] == 3


@pytest.mark.parametrize(
    ("fields", "cached"),
    [
        ({"temperature": openai.omit}, False),  # omitted: the API's default 1.0
        ({"temperature": 0.7}, False),
        ({"temperature": 0, "n": 2}, False),
        ({"temperature": 0.7, "seed": 42}, True),
    ],
)
async def test_only_deterministic_requests_are_cached(proxy, model, fields, cached):
    ai = client(proxy)
    await ask(ai, **fields)
    status, _ = await ask(ai, **fields)
    if cached:
        assert status == "sidecache; hit; detail=l1"
        assert model.calls[CHAT] == 1
    else:
        assert status == "sidecache; fwd=bypass; detail=sampled"
        assert model.calls[CHAT] == 2


async def test_a_route_may_opt_in_to_caching_sampled_answers(proxy, model):
    ai = client(proxy, prefix="/sampled")
    await ask(ai, temperature=openai.omit)
    status, _ = await ask(ai, temperature=openai.omit)
    assert status == "sidecache; hit; detail=l1"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_cut_short_by_length_is_never_stored(proxy, model, stream):
    ai = client(proxy)
    for _ in range(2):
        if stream:
            _, chunks = await ask_stream(ai, max_tokens=2)
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        else:
            _, answer = await ask(ai, max_tokens=2)
            assert answer.choices[0].finish_reason == "length"
    assert model.calls[CHAT] == 2
    assert len(proxy.runtime.l1) == 0


async def test_a_stream_is_stored_only_once_done_arrived(proxy, model):
    model.hold = True
    ai = client(proxy)
    opened = asyncio.ensure_future(ask_stream(ai))
    await model.first_sent.wait()
    assert len(proxy.runtime.l1) == 0  # under way: nothing stored yet
    model.release.set()
    await opened
    await wait_until(lambda: _stored(proxy))
    status, _ = await ask_stream(ai)
    assert status == "sidecache; hit; detail=l1"
    assert model.calls[CHAT] == 1


async def test_a_stream_that_ends_without_done_is_not_stored(proxy, model):
    model.omit_done = True
    ai = client(proxy)
    for _ in range(2):
        raw = await ai.chat.completions.with_raw_response.create(**ASK, stream=True)
        assert [c async for c in raw.parse()]  # what the upstream sent, relayed
    assert model.calls[CHAT] == 2
    assert len(proxy.runtime.l1) == 0


async def test_a_stream_broken_off_ends_the_client_stream_with_an_error_and_is_not_stored(
    proxy, model
):
    model.break_after = 3
    ai = client(proxy)
    with pytest.raises(Exception) as broken:
        await ask_stream(ai)
    print("BROKEN", type(broken.value).__mro__)
    model.break_after = None
    status, _ = await ask_stream(ai)
    assert status == "sidecache; fwd=miss; detail=stream"
    assert model.calls[CHAT] == 2


async def test_a_stored_stream_answers_a_json_request_with_the_same_content(proxy, model):
    ai = client(proxy)
    _, chunks = await ask_stream(ai, **WITH_USAGE)
    await wait_until(lambda: _stored(proxy))
    status, answer = await ask(ai)
    assert status == "sidecache; hit; detail=l1"
    message = answer.choices[0].message
    assert message.content == text_of(chunks)
    assert message.model_extra["reasoning_content"] == text_of(chunks, "reasoning_content")
    assert answer.usage.model_dump() == usage_of(chunks)
    assert answer.choices[0].finish_reason == chunks[-2]["choices"][0]["finish_reason"]
    assert model.calls[CHAT] == 1


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_stored_json_answer_is_replayed_as_a_stream_with_the_same_content(
    proxy, model, include_usage
):
    ai = client(proxy)
    _, answer = await ask(ai, tools=TOOLS)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    status, chunks = await ask_stream(ai, tools=TOOLS, **options)
    if not include_usage:  # a stream without usage is a stored answer of its own
        assert status == "sidecache; fwd=miss; detail=stream"
        return
    assert status == "sidecache; hit; detail=l1"
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"]]
    call = next(c for c in calls if c)[0]
    assert call["function"] == answer.choices[0].message.tool_calls[0].function.model_dump()
    assert usage_of(chunks) == answer.usage.model_dump()
    assert model.calls[CHAT] == 1


async def test_a_replayed_stream_keeps_every_chunk_and_the_usage_chunk(proxy, model):
    ai = client(proxy)
    _, original = await ask_stream(ai, **WITH_USAGE)
    await wait_until(lambda: _stored(proxy))
    status, replayed = await ask_stream(ai, **WITH_USAGE)
    assert status == "sidecache; hit; detail=l1"
    assert replayed == original
    assert replayed[-1]["choices"] == [] and replayed[-1]["usage"]["total_tokens"] > 0
    assert model.calls[CHAT] == 1


@pytest.mark.parametrize("front", FRONT_ENDS)
async def test_concurrent_identical_streams_share_one_upstream_stream(proxy, model, front):
    """10 identical streaming requests: one model call, and every client streams live: the
    late joiners get the first chunk while the upstream still holds the rest back."""
    model.hold = True
    ai = client(proxy, **FRONT_ENDS[front])
    streams = [await _open_stream(ai)]
    await model.first_sent.wait()
    streams += await asyncio.gather(*(_open_stream(ai) for _ in range(9)))
    firsts = await asyncio.gather(*(anext(stream) for _, stream in streams))
    assert not model.release.is_set()  # every first chunk arrived before the end was sent
    model.release.set()
    bodies = [
        [first.model_dump(), *[c.model_dump() async for c in stream]]
        for first, (_, stream) in zip(firsts, streams, strict=True)
    ]
    assert model.calls[CHAT] == 1
    assert all(body == bodies[0] for body in bodies)
    assert text_of(bodies[0]).startswith("The answer is")
    statuses = [status for status, _ in streams]
    assert statuses[0] == "sidecache; fwd=miss; detail=stream"
    assert statuses[1:] == ["sidecache; fwd=miss; collapsed; detail=stream"] * 9
    assert metric(proxy, "sidecache_coalesced_requests_total", route="chat") == 9


async def test_a_client_that_leaves_does_not_break_the_others(proxy, model):
    model.hold = True
    ai = client(proxy)
    _, leaving = await _open_stream(ai)
    await model.first_sent.wait()
    _, staying = await _open_stream(ai)
    await anext(leaving)
    await leaving.aclose()
    model.release.set()
    chunks = [c async for c in staying]
    assert text_of([c.model_dump() for c in chunks]).startswith("The answer is")
    await wait_until(lambda: _stored(proxy))
    assert model.calls[CHAT] == 1


async def test_another_tenant_does_not_join_a_stream_under_way(proxy, model):
    model.hold = True
    _, first = await _open_stream(client(proxy, key="sk-tenant-a"))
    await model.first_sent.wait()
    other = asyncio.ensure_future(_open_stream(client(proxy, key="sk-tenant-b")))
    await wait_until(lambda: _calls(model, 2))
    model.release.set()
    status, second = await other
    assert status == "sidecache; fwd=miss; detail=stream"
    assert [c async for c in first] and [c async for c in second]


async def test_embeddings_are_cached(proxy, model):
    ai = client(proxy)
    first = await ai.embeddings.with_raw_response.create(model="e", input=["a b", "c"])
    second = await ai.embeddings.with_raw_response.create(model="e", input=["a b", "c"])
    assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert model.calls["/v1/embeddings"] == 1


async def test_hits_count_tokens_saved_and_time_to_first_chunk(proxy, model):
    ai = client(proxy)
    _, chunks = await ask_stream(ai, **WITH_USAGE)
    await wait_until(lambda: _stored(proxy))
    await ask_stream(ai, **WITH_USAGE)
    usage = usage_of(chunks)
    assert usage is not None
    saved = metric(proxy, "sidecache_llm_tokens_saved_total", route="chat", type="completion")
    assert saved == usage["completion_tokens"]
    for cache in ("miss", "hit"):
        labels = {"route": "chat", "cache": cache}
        assert metric(proxy, "sidecache_llm_first_chunk_seconds_count", **labels) == 1


async def _open_stream(ai: AsyncOpenAI) -> tuple[str, Any]:
    raw = await ai.chat.completions.with_raw_response.create(**ASK, stream=True)
    return raw.headers["Cache-Status"], aiter(raw.parse())


async def _stored(proxy: Proxy) -> bool:
    return len(proxy.runtime.l1) > 0


async def _calls(model: FakeModel, count: int) -> bool:
    return model.calls[CHAT] >= count
