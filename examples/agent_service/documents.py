"""The help-centre documents the service searches: ~300, generated from templates.

``help_topics.json`` lists, per topic, the things people try to do and how they are done;
every subject becomes a how-to, a troubleshooting note and a policy note. The output is
deterministic, so document ids are stable across restarts and replicas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TOPICS_FILE = Path(__file__).with_name("help_topics.json")
KINDS = ("how-to", "troubleshooting", "policy")


@dataclass(frozen=True)
class Document:
    """One knowledge-base article."""

    id: int
    title: str
    body: str
    topic: str
    kind: str

    @property
    def text(self) -> str:
        """The text that is embedded for search."""
        return f"{self.title}. {self.body}"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "topic": self.topic,
            "kind": self.kind,
        }


def _compose(doc_id: int, topic: dict[str, str], kind: str, subject: str, detail: str) -> Document:
    team, audience = topic["team"], topic["audience"]
    if kind == "how-to":
        title = f"How to {subject}"
        body = f"{detail} This applies to {audience}. Need more help? Ask {team}."
    elif kind == "troubleshooting":
        title = f"Can't {subject}?"
        body = (
            f"If you are unable to {subject}, first check {topic['check']}. {detail} "
            f"If it still fails, contact {team} with the exact error message."
        )
    else:
        title = f"Who may {subject}"
        body = (
            f"This is available to {audience}; other requests go through {team}, "
            f"who answer within {topic['turnaround']}. {detail}"
        )
    return Document(doc_id, title, body, topic["name"], kind)


def generate_documents(topics_file: Path = TOPICS_FILE) -> list[Document]:
    """All documents, ids from 1, in a stable order."""
    documents: list[Document] = []
    for topic in json.loads(topics_file.read_text()):
        for subject, detail in topic["subjects"]:
            for kind in KINDS:
                documents.append(_compose(len(documents) + 1, topic, kind, subject, detail))
    return documents
