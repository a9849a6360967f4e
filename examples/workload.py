"""A realistic request mix for the reference agent service, reproducible from a seed.

What real agent traffic looks like from a cache's point of view:

- **agent selection** (``POST /agents/select``): a few tasks are asked for all the time and
  most rarely (Zipf-like popularity), each with a fresh ``request_id`` the cache ignores;
- **search** (``POST /search``): people ask the same help-centre questions in their own
  words, so one intent arrives as several paraphrases (the semantic tier's job);
- **catalogue reads** (``GET /agents``): not a cached route, passed through;
- **MCP calls** (``POST /mcp``, with ``mcp_share``): agent runs using the service's MCP
  endpoint, each of which discovers the server, re-lists the tools, often lists the help
  centre's documents and reads a few (Zipf-popular) of them, sometimes calls an agent tool;
- a few **tenants**, each with its own ``Authorization`` header and share of the traffic;
  tenants never share cache entries (except MCP results the server declares public).
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from examples.agent_service.catalogue import AGENTS
from examples.agent_service.documents import generate_documents
from examples.agent_service.mcp import document_uri
from examples.agent_service.mcp_transport import PROTOCOL_VERSION_META, VERSION

TOPICS_FILE = Path(__file__).parent / "agent_service" / "help_topics.json"

#: Tenant name → share of the traffic.
TENANTS = {"acme": 0.4, "globex": 0.3, "initech": 0.2, "umbrella": 0.1}

#: Route mix: share of requests per kind.
MIX = {"select": 0.57, "search": 0.35, "catalogue": 0.08}

#: Share of the demo's requests that are MCP calls.
MCP_SHARE = 0.2

#: How often one MCP agent run does each optional step (it always lists the tools).
MCP_DISCOVER = 0.5
MCP_LIST_RESOURCES = 0.6
MCP_CALL_TOOL = 0.25
MCP_MAX_READS = 3

#: Zipf exponent: weight of the n-th most popular item is 1 / n**s.
ZIPF_S = 1.1

TASKS = (
    "I was charged twice for my subscription this month, please refund one charge",
    "Where is my parcel? The tracking page has not changed in four days",
    "My password reset email never arrives and I am locked out",
    "The VPN disconnects every few minutes when I work from home",
    "I want to return the shoes I ordered, they are the wrong size",
    "How much parental leave am I entitled to?",
    "My payslip shows the wrong tax code since January",
    "Got an email asking me to confirm my bank login, looks like phishing",
    "Please send me a copy of the invoice for order 4471",
    "Our CI pipeline fails on the deploy step with a permissions error",
    "Draft a polite reminder to a customer about an unpaid invoice",
    "Build a dashboard of weekly active users by region",
    "Review this NDA and flag anything unusual in the liability clause",
    "A customer asks us to delete all the personal data we hold about them",
    "Book a flight to Berlin next Tuesday and a hotel near the office",
    "Translate our release notes into German and French",
    "Schedule interviews for the three shortlisted backend candidates",
    "Prepare a quote for 40 seats with the approved 15% discount",
    "Research Globex Corp before our sales call on Thursday",
    "Walk our new team through setting up their workspace",
    "Does the product integrate with Salesforce, and is it on the roadmap?",
    "My laptop will not turn on after the latest update",
    "Reimburse the taxi receipts from my client visit",
    "Our production API returns 502 errors since the last release",
    "Is there a limit on the number of automations per workspace?",
    "Update the credit card we pay our subscription with",
    "The courier left my parcel at the wrong address",
    "Set up MFA on my new phone, the old one was stolen",
    "Summarise this quarter's support tickets for the leadership update",
    "Explain the drop in conversion rate last week",
    "Which benefits can I still enrol in after my probation period?",
    "My expense claim was rejected without a reason",
    "We received a subject access request under GDPR",
    "Reset the admin rights on my developer laptop",
    "Is the warranty still valid on a blender bought 18 months ago?",
    "Write an announcement about the office move in a friendly tone",
)

#: How people phrase one search intent ("reset a password" → "how do I reset a password").
PHRASINGS = (
    "how do I {subject}",
    "How can I {subject}?",
    "what are the steps to {subject}",
    "I need to {subject}",
    "help me {subject} please",
    "is it possible to {subject}?",
)


@dataclass(frozen=True)
class Request:
    """One request of the workload: everything a client needs to send it."""

    kind: str
    method: str
    path: str
    tenant: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def zipf_weights(count: int, s: float = ZIPF_S) -> list[float]:
    return [1.0 / (rank**s) for rank in range(1, count + 1)]


def search_subjects(topics_file: Path = TOPICS_FILE) -> list[str]:
    """Every "thing people try to do" of the help centre, e.g. "reset a password"."""
    topics = json.loads(topics_file.read_text())
    return [subject for topic in topics for subject, _detail in topic["subjects"]]


def build_workload(count: int, seed: int = 7, mcp_share: float = 0.0) -> list[Request]:
    """``count`` requests in the order a client sends them, ``mcp_share`` of them MCP calls;
    the same for the same seed."""
    rng = random.Random(seed)
    mcp_count = round(count * mcp_share)
    http = _http_requests(count - mcp_count, rng)
    if not mcp_count:
        return http
    return _interleave(http, _mcp_calls(mcp_count, rng), rng)


def _http_requests(count: int, rng: random.Random) -> list[Request]:
    tasks = list(TASKS)
    subjects = search_subjects()
    # Popularity ranks are arbitrary: shuffle so the catalogue order does not decide them.
    rng.shuffle(tasks)
    rng.shuffle(subjects)
    task_weights = zipf_weights(len(tasks))
    subject_weights = zipf_weights(len(subjects))
    kinds, kind_weights = zip(*MIX.items(), strict=True)
    tenants, tenant_weights = zip(*TENANTS.items(), strict=True)

    requests = []
    for _ in range(count):
        kind = rng.choices(kinds, kind_weights)[0]
        tenant = rng.choices(tenants, tenant_weights)[0]
        headers = {"Authorization": f"Bearer {tenant}-demo-token"}
        if kind == "catalogue":
            requests.append(Request(kind, "GET", "/agents", tenant, None, headers))
            continue
        if kind == "select":
            task = rng.choices(tasks, task_weights)[0]
            document: dict[str, object] = {"task": task, "top_k": 3}
            path = "/agents/select"
        else:
            subject = rng.choices(subjects, subject_weights)[0]
            document = {"query": rng.choice(PHRASINGS).format(subject=subject), "top_k": 5}
            path = "/search"
        # Every call carries a fresh id, as real clients do; the cache is told to ignore it.
        document["request_id"] = str(uuid.UUID(int=rng.getrandbits(128)))
        headers = {**headers, "Content-Type": "application/json"}
        requests.append(Request(kind, "POST", path, tenant, json.dumps(document).encode(), headers))
    return requests


def _mcp_calls(count: int, rng: random.Random) -> list[Request]:
    """Agent runs on the MCP endpoint, one after another, cut to ``count`` calls."""
    uris = [document_uri(document.id) for document in generate_documents()]
    agents = [agent.id for agent in AGENTS]
    tasks = list(TASKS)
    for popular_first in (uris, agents, tasks):
        rng.shuffle(popular_first)
    tenants, tenant_weights = zip(*TENANTS.items(), strict=True)

    calls: list[Request] = []
    while len(calls) < count:
        tenant = rng.choices(tenants, tenant_weights)[0]
        steps: list[tuple[str, dict[str, object]]] = []
        if rng.random() < MCP_DISCOVER:
            steps.append(("server/discover", {}))
        steps.append(("tools/list", {}))
        if rng.random() < MCP_LIST_RESOURCES:
            steps.append(("resources/list", {}))
        reads = rng.choices(uris, zipf_weights(len(uris)), k=rng.randint(1, MCP_MAX_READS))
        steps += [("resources/read", {"uri": uri}) for uri in reads]
        if rng.random() < MCP_CALL_TOOL:
            agent = rng.choices(agents, zipf_weights(len(agents)))[0]
            task = rng.choices(tasks, zipf_weights(len(tasks)))[0]
            steps.append(("tools/call", {"name": agent, "arguments": {"task": task}}))
        # Each run numbers its own requests, as an MCP client does.
        calls += [
            mcp_request(tenant, n, method, params) for n, (method, params) in enumerate(steps, 1)
        ]
    return calls[:count]


def mcp_request(tenant: str, request_id: int, method: str, params: dict[str, object]) -> Request:
    """One MCP call (revision 2026-07-28) with the headers that mirror its body."""
    meta = {
        PROTOCOL_VERSION_META: VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": f"{tenant}-agent", "version": "1.0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": method,
        "params": {**params, "_meta": meta},
    }
    headers = {
        "Authorization": f"Bearer {tenant}-demo-token",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": method,
    }
    name = params.get("name", params.get("uri"))
    if isinstance(name, str):
        headers["Mcp-Name"] = name
    return Request("mcp", "POST", "/mcp", tenant, json.dumps(body).encode(), headers)


def _interleave(first: list[Request], second: list[Request], rng: random.Random) -> list[Request]:
    """Both lists in one, at random places, each keeping its own order."""
    slots = [0] * len(first) + [1] * len(second)
    rng.shuffle(slots)
    streams = (iter(first), iter(second))
    return [next(streams[slot]) for slot in slots]


def distinct_keys(requests: list[Request]) -> int:
    """How many different requests the workload holds once ``request_id`` (on MCP calls, the
    JSON-RPC ``id``) is ignored."""

    def identity(request: Request) -> tuple[str, str, str, str]:
        document = json.loads(request.body) if request.body else {}
        # Ids that change on every call and never change the answer.
        document.pop("id" if request.kind == "mcp" else "request_id", None)
        return request.method, request.path, request.tenant, json.dumps(document, sort_keys=True)

    return len({identity(r) for r in requests})


def summary(requests: list[Request]) -> str:
    """One line describing the mix, for the demo's header."""
    per_kind = {
        k: sum(1 for _ in g) for k, g in itertools.groupby(sorted(r.kind for r in requests))
    }
    parts = ", ".join(f"{n} {k}" for k, n in per_kind.items())
    return f"{len(requests)} requests ({parts}), {distinct_keys(requests)} distinct"
