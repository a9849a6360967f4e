"""Embedders: the shipped wordllama model, and an OpenAI-compatible endpoint served by a real
aiohttp app on 127.0.0.1."""

import asyncio

import numpy as np
import pytest
from aiohttp import web

from core.config import EmbedderConfig, config_from_dict
from core.errors import ConfigError, EmbedderError
from core.semantic.embedders import MemoEmbedder, OpenAIEmbedder, WordLlamaEmbedder, build_embedder


class FakeEmbeddings:
    """``POST /v1/embeddings`` answering a deterministic vector per text; it records the
    requests and can be slowed down or made to fail."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        self.delay = 0.0
        self.status = 200
        self.app = web.Application()
        self.app.router.add_post("/v1/embeddings", self.embeddings)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response({"error": "boom"}, status=self.status)
        return web.json_response({"data": [{"embedding": vector_for(body["input"], self.dim)}]})


def vector_for(text: str, dim: int) -> list[float]:
    rng = np.random.default_rng(sum(text.encode()))
    return [float(x) for x in rng.normal(size=dim)]


@pytest.fixture
async def fake_embeddings(aiohttp_server):
    fake = FakeEmbeddings()
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    fake.url = str(server.make_url("/")).rstrip("/")
    return fake


def openai_config(fake: FakeEmbeddings, **overrides) -> EmbedderConfig:
    settings = {"kind": "openai", "url": fake.url, "model": "test-embed", "timeout": 0.5}
    return EmbedderConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


async def test_wordllama_answers_a_256_dimension_unit_vector(wordllama):
    vector = await wordllama.embed("which agent handles refunds?")
    assert (vector.shape, vector.dtype) == ((256,), np.float32)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert (wordllama.id, wordllama.dim) == ("wordllama:l2_supercat", 256)


async def test_wordllama_puts_a_paraphrase_closer_than_another_topic(wordllama):
    query = await wordllama.embed("how to configure rate limiting on the API gateway")
    paraphrase = await wordllama.embed("API gateway rate limit configuration")
    other = await wordllama.embed("parental leave policy")
    assert float(query @ paraphrase) > 0.8 > 0.2 > float(query @ other)


async def test_wordllama_refuses_an_empty_text(wordllama):
    with pytest.raises(EmbedderError):
        await wordllama.embed("   ")


async def test_openai_embedder_posts_model_and_input_with_the_bearer_key(
    fake_embeddings, monkeypatch
):
    monkeypatch.setenv("TEST_EMBED_KEY", "secret-123")
    embedder = OpenAIEmbedder(openai_config(fake_embeddings, api_key_env="TEST_EMBED_KEY"))
    try:
        vector = await embedder.embed("hello world")
    finally:
        await embedder.close()
    assert fake_embeddings.requests == [{"model": "test-embed", "input": "hello world"}]
    assert fake_embeddings.authorizations == ["Bearer secret-123"]
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


async def test_openai_embedder_learns_its_dimension_from_the_first_answer(fake_embeddings):
    embedder = OpenAIEmbedder(openai_config(fake_embeddings))
    assert embedder.dim == 0
    try:
        await embedder.embed("hello")
    finally:
        await embedder.close()
    assert (embedder.dim, embedder.id) == (8, "openai:test-embed")


async def test_openai_embedder_rejects_an_answer_of_the_wrong_size(fake_embeddings):
    embedder = OpenAIEmbedder(openai_config(fake_embeddings, dim=16))
    try:
        with pytest.raises(EmbedderError, match="expected 16"):
            await embedder.embed("hello")
    finally:
        await embedder.close()


async def test_a_slow_embeddings_endpoint_is_an_embedder_error(fake_embeddings):
    fake_embeddings.delay = 1.0
    embedder = OpenAIEmbedder(openai_config(fake_embeddings, timeout=0.1))
    try:
        with pytest.raises(EmbedderError):
            await embedder.embed("hello")
    finally:
        await embedder.close()


async def test_a_failing_embeddings_endpoint_is_an_embedder_error(fake_embeddings):
    fake_embeddings.status = 500
    embedder = OpenAIEmbedder(openai_config(fake_embeddings))
    try:
        with pytest.raises(EmbedderError, match="500"):
            await embedder.embed("hello")
    finally:
        await embedder.close()


async def test_an_unreachable_embeddings_endpoint_is_an_embedder_error(unused_tcp_port):
    config = EmbedderConfig(kind="openai", url=f"http://127.0.0.1:{unused_tcp_port}", model="m")
    embedder = OpenAIEmbedder(config)
    try:
        with pytest.raises(EmbedderError):
            await embedder.embed("hello")
    finally:
        await embedder.close()


async def test_memo_embeds_a_repeated_text_once(fake_embeddings):
    embedder = build_embedder(openai_config(fake_embeddings, memo_size=10))
    try:
        first = await embedder.embed("same text")
        second = await embedder.embed("same text")
    finally:
        await embedder.close()
    assert len(fake_embeddings.requests) == 1
    assert np.array_equal(first, second)


async def test_memo_forgets_the_least_recently_used_text(fake_embeddings):
    embedder = MemoEmbedder(OpenAIEmbedder(openai_config(fake_embeddings)), size=2)
    try:
        for text in ("a", "b", "a", "c", "a", "b"):
            await embedder.embed(text)
    finally:
        await embedder.close()
    assert [r["input"] for r in fake_embeddings.requests] == ["a", "b", "c", "b"]


async def test_memo_does_not_remember_failures(fake_embeddings):
    embedder = build_embedder(openai_config(fake_embeddings, memo_size=10))
    fake_embeddings.status = 503
    try:
        with pytest.raises(EmbedderError):
            await embedder.embed("text")
        fake_embeddings.status = 200
        await embedder.embed("text")
    finally:
        await embedder.close()
    assert len(fake_embeddings.requests) == 2


def test_build_embedder_defaults_to_memoised_wordllama():
    embedder = build_embedder(EmbedderConfig())
    assert isinstance(embedder, MemoEmbedder)
    assert isinstance(embedder.inner, WordLlamaEmbedder)


@pytest.mark.parametrize(
    ("embedder", "message"),
    [
        ({"kind": "bert"}, "embedder.kind"),
        ({"kind": "nonsense"}, "embedder.kind"),
        ({"kind": "openai", "url": "ftp://x", "model": "m"}, "embedder.url"),
        ({"kind": "openai", "url": "http://127.0.0.1:1"}, "embedder.model"),
        ({"dim": 300}, "embedder.dim"),
    ],
)
def test_bad_embedder_config_is_refused_at_load_naming_the_field(embedder, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"cache": {"semantic": {"embedder": embedder}}})
