"""In-memory exact cosine search: the fallback when no PostgreSQL is configured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .documents import Document
from .index import Hit, SearchFilters


class MemoryIndex:
    """Brute-force search over a matrix of unit vectors (a few hundred rows: microseconds)."""

    backend = "memory"

    def __init__(self, documents: Sequence[Document], vectors: np.ndarray) -> None:
        self._documents = tuple(documents)
        self._vectors = vectors

    async def search(self, vector: np.ndarray, top_k: int, filters: SearchFilters) -> list[Hit]:
        scores = self._vectors @ vector
        allowed = np.array([filters.matches(doc) for doc in self._documents], dtype=bool)
        scores = np.where(allowed, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[: min(top_k, int(allowed.sum()))]
        return [Hit(self._documents[i], float(scores[i])) for i in order]
