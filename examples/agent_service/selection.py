"""Ranking the catalogue's agents for a task."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .catalogue import Agent, words
from .embedder import Embedder

# Embeddings carry the meaning; an exact skill word in the task is strong evidence too.
_SIMILARITY_WEIGHT = 0.7
_KEYWORD_WEIGHT = 0.3
_KEYWORDS_FOR_FULL_BONUS = 2


@dataclass(frozen=True)
class Ranked:
    """An agent with its score for one task (higher is better)."""

    agent: Agent
    score: float

    def to_json(self) -> dict[str, object]:
        return {"id": self.agent.id, "name": self.agent.name, "score": round(self.score, 4)}


class AgentSelector:
    """Scores every agent for a task: cosine similarity of the task to the agent's profile,
    blended with how many of the agent's skill words the task mentions."""

    def __init__(self, embedder: Embedder, agents: Sequence[Agent]) -> None:
        self._embedder = embedder
        self._agents = tuple(agents)
        self._profiles = embedder.embed([agent.profile for agent in self._agents])

    @property
    def agents(self) -> tuple[Agent, ...]:
        return self._agents

    def rank(self, task: str, top_k: int) -> list[Ranked]:
        """The ``top_k`` best agents for ``task``, best first; ties keep catalogue order."""
        similarity = self._profiles @ self._embedder.embed_one(task)
        task_words = words(task)
        keyword = np.array(
            [
                min(len(task_words & agent.keywords) / _KEYWORDS_FOR_FULL_BONUS, 1.0)
                for agent in self._agents
            ]
        )
        scores = _SIMILARITY_WEIGHT * similarity + _KEYWORD_WEIGHT * keyword
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [Ranked(self._agents[i], float(scores[i])) for i in order]
