"""Sentence embeddings from the WordLlama weights shipped inside the wordllama wheel."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class Embedder:
    """Offline WordLlama embedder: 256-dim unit vectors, never downloads anything.

    Loading takes a few hundred milliseconds; embedding a short text tens of microseconds,
    so it is fine to call on the event loop.
    """

    dim = 256

    def __init__(self) -> None:
        from wordllama import WordLlama  # imported here: it configures logging on import

        spec = importlib.util.find_spec("wordllama")
        assert spec is not None and spec.origin is not None
        # WordLlama looks for its bundled tokenizer under a misspelt directory, so point the
        # cache at the package itself, where weights/ and tokenizers/ both live.
        self._model = WordLlama.load(
            cache_dir=Path(spec.origin).parent, dim=self.dim, disable_download=True
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length float32 row per text; all zeros when no token is known."""
        vectors = np.asarray(self._model.embed(list(texts), norm=False), dtype=np.float32)
        vectors = np.nan_to_num(vectors)  # texts without tokens pool to NaN
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
