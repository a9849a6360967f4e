"""Embedders: turn a query text into a unit-length float32 vector.

One small interface (``Embedder``) with two implementations selected in config: the offline
``wordllama`` model whose weights ship inside its wheel, and any OpenAI-compatible
``/v1/embeddings`` endpoint. ``MemoEmbedder`` wraps either one with an LRU of recent texts.
Every failure surfaces as ``EmbedderError`` so the semantic tier can turn it into a miss.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np

from core.config import WORDLLAMA_DIM, EmbedderConfig
from core.errors import ConfigError, EmbedderError

#: The 256-dimension weights shipped in the wordllama wheel (``weights/l2_supercat_256``).
WORDLLAMA_CONFIG = "l2_supercat"


class Embedder(Protocol):
    """Anything that maps a text to a unit vector of ``dim`` float32 values.

    ``id`` names the model; together with ``dim`` it is part of every semantic scope, so
    vectors of two different models are never compared.
    """

    id: str
    dim: int

    async def embed(self, text: str) -> np.ndarray: ...

    async def close(self) -> None: ...


def unit_vector(values: Any) -> np.ndarray:
    """A float32 copy of ``values`` scaled to length 1; a zero or non-finite vector is an
    ``EmbedderError`` because it cannot be compared by cosine."""
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise EmbedderError("embedding has no direction (empty text?)")
    return vector / norm


class WordLlamaEmbedder:
    """The offline default: static token embeddings averaged (~0.1 ms, no network).

    The weights are loaded from the installed package; downloads are disabled so a missing
    file is an error at start, never a network call.
    """

    def __init__(self, dim: int = WORDLLAMA_DIM) -> None:
        import wordllama
        from wordllama import WordLlama

        # wordllama's own default cache path is misspelled; its package dir holds the weights.
        package_dir = Path(wordllama.__file__).parent
        try:
            self._model = WordLlama.load(
                config=WORDLLAMA_CONFIG,
                dim=WORDLLAMA_DIM,
                trunc_dim=dim if dim != WORDLLAMA_DIM else None,
                cache_dir=package_dir,
                disable_download=True,
            )
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"cache.semantic.embedder: cannot load wordllama ({exc})") from exc
        self.dim = dim
        self.id = f"wordllama:{WORDLLAMA_CONFIG}"

    async def embed(self, text: str) -> np.ndarray:
        # Synchronous and far below a millisecond: cheaper inline than in a thread.
        return self.embed_now(text)

    def embed_now(self, text: str) -> np.ndarray:
        """Embed without awaiting (also used by benchmarks to load many texts)."""
        if not text.strip():
            raise EmbedderError("empty text")
        return unit_vector(self._model.embed(text)[0])

    def embed_many(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of many texts at once, one row per text (bulk loads)."""
        matrix = np.asarray(self._model.embed(texts, batch_size=256), dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise EmbedderError("a text has no embedding (empty text?)")
        return matrix / norms

    async def close(self) -> None:
        return None


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {url}/v1/embeddings`` (TEI, vLLM, Ollama, cloud APIs).

    One pooled ``aiohttp.ClientSession`` per embedder, created on first use (it needs the
    running loop); a short total timeout so a slow model never delays a request for long.
    """

    def __init__(self, config: EmbedderConfig) -> None:
        base = config.url.rstrip("/")
        self._endpoint = f"{base}/embeddings" if base.endswith("/v1") else f"{base}/v1/embeddings"
        self._model = config.model
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self._session: aiohttp.ClientSession | None = None
        self.id = f"openai:{config.model}"
        self.dim = config.dim

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
            )
        return self._session

    async def embed(self, text: str) -> np.ndarray:
        if not text.strip():
            raise EmbedderError("empty text")
        try:
            async with self._client().post(
                self._endpoint, json={"model": self._model, "input": text}
            ) as response:
                if response.status != 200:
                    raise EmbedderError(f"embeddings endpoint answered {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EmbedderError(f"embeddings endpoint failed: {exc!r}") from exc
        vector = unit_vector(self._first_embedding(answer))
        if self.dim == 0:
            self.dim = len(vector)
        elif len(vector) != self.dim:
            raise EmbedderError(f"expected {self.dim} dimensions, got {len(vector)}")
        return vector

    @staticmethod
    def _first_embedding(answer: Any) -> list[float]:
        try:
            values = answer["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EmbedderError("embeddings answer has no data[0].embedding") from exc
        if not isinstance(values, list) or not values:
            raise EmbedderError("embeddings answer is not a list of numbers")
        return values

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class MemoEmbedder:
    """Remembers the vectors of the ``size`` most recently embedded texts (LRU).

    Repeated queries are the common case for a cache, and a remote embedder costs a round
    trip; failures are not remembered, so a recovered endpoint is used at once.
    """

    def __init__(self, inner: Embedder, size: int) -> None:
        self._inner = inner
        self._size = max(0, size)
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def inner(self) -> Embedder:
        return self._inner

    async def embed(self, text: str) -> np.ndarray:
        vector = self._memo.get(text)
        if vector is not None:
            self._memo.move_to_end(text)
            return vector
        vector = await self._inner.embed(text)
        vector.setflags(write=False)  # shared between callers: nobody may change it
        if self._size:
            self._memo[text] = vector
            if len(self._memo) > self._size:
                self._memo.popitem(last=False)
        return vector

    async def close(self) -> None:
        await self._inner.close()


def build_embedder(config: EmbedderConfig) -> Embedder:
    """The embedder named by ``config.kind``, memoised when ``memo_size`` > 0."""
    inner: Embedder
    # The fields were checked when the config was loaded (core.config).
    if config.kind == "wordllama":
        inner = WordLlamaEmbedder(config.dim or WORDLLAMA_DIM)
    else:
        inner = OpenAIEmbedder(config)
    return MemoEmbedder(inner, config.memo_size) if config.memo_size > 0 else inner
