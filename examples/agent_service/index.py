"""What a document index offers the search route, whatever stores the vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .documents import Document

FILTER_FIELDS = ("topic", "kind")


class SearchUnavailable(Exception):
    """The index cannot answer right now (e.g. its database is down)."""


@dataclass(frozen=True)
class SearchFilters:
    """Restricts results to some topics and/or kinds; ``None`` means any."""

    topics: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    @classmethod
    def from_json(cls, value: object) -> SearchFilters:
        """Parse the request's ``filters`` object; ``ValueError`` names the bad field."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ValueError("filters: expected an object")
        unknown = sorted(set(value) - set(FILTER_FIELDS))
        if unknown:
            raise ValueError(f"filters: unknown field {unknown[0]!r}, expected topic or kind")
        return cls(_names(value, "topic"), _names(value, "kind"))

    def matches(self, document: Document) -> bool:
        return (self.topics is None or document.topic in self.topics) and (
            self.kinds is None or document.kind in self.kinds
        )


def _names(filters: dict[str, object], field: str) -> frozenset[str] | None:
    raw = filters.get(field)
    if raw is None:
        return None
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"filters.{field}: expected a string or a non-empty list of strings")
    return frozenset(values)


@dataclass(frozen=True)
class Hit:
    """A document and its cosine similarity to the query."""

    document: Document
    score: float

    def to_json(self) -> dict[str, object]:
        return {**self.document.to_json(), "score": round(self.score, 4)}


class DocumentIndex(Protocol):
    """Nearest-neighbour search over the knowledge documents."""

    backend: str

    async def search(self, vector: np.ndarray, top_k: int, filters: SearchFilters) -> list[Hit]:
        """The ``top_k`` documents closest to ``vector`` that pass ``filters``, best first.

        Raises ``SearchUnavailable`` when the backing store cannot answer.
        """
        ...
