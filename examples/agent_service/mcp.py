"""``POST /mcp``: the agent catalogue and the help centre over MCP (revision 2026-07-28).

- Every catalogue agent is a tool (``billing-specialist``, ...) taking a ``task``: calling it
  ranks the catalogue for the task after the same simulated work as ``/agents/select`` and
  says how well that agent fits, and which agent fits best.
- Every help-centre document is a resource ``help://documents/<id>`` (Markdown), listed
  ``PAGE_SIZE`` to a page; one resource template names them all.

The results of ``server/discover``, of the lists and of ``resources/read`` carry the cache
hints of the caching utility: a ``ttlMs``, and ``cacheScope: "public"`` because neither the
catalogue nor the help centre differs from one caller to another. Tool results carry none: a
call is an action. How requests are read and checked is ``mcp_transport``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from .catalogue import Agent
from .documents import Document
from .mcp_transport import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    SUPPORTED_VERSIONS,
    RpcError,
    answer,
    check_headers,
    origin_allowed,
    read_message,
)
from .state import DOCUMENTS, MCP_CALLS, SELECTOR, SETTINGS
from .validation import MAX_TEXT_CHARS

MCP_PATH = "/mcp"
SERVER_INFO = {"name": "reference-agent-service", "version": "1.0.0"}
DISCOVER_TTL_MS = 3_600_000
LIST_TTL_MS = 300_000
READ_TTL_MS = 600_000
PAGE_SIZE = 100
DOCUMENT_MIME = "text/markdown"
#: Every document's URI (RFC 6570 template, as ``resources/templates/list`` gives it).
DOCUMENT_URI = "help://documents/{id}"
_DOCUMENT_URI = re.compile(r"help://documents/([1-9][0-9]*)", re.ASCII)

Params = dict[str, Any]
Result = dict[str, Any]


def document_uri(document_id: int) -> str:
    return DOCUMENT_URI.format(id=document_id)


def _hints(ttl_ms: int) -> Result:
    return {"ttlMs": ttl_ms, "cacheScope": "public"}


async def discover(app: web.Application, params: Params) -> Result:
    return {
        "supportedVersions": list(SUPPORTED_VERSIONS),
        "capabilities": {"tools": {}, "resources": {}},
        "_meta": {"io.modelcontextprotocol/serverInfo": SERVER_INFO},
        "instructions": "Call the agent that fits a task best; read help documents for facts.",
        **_hints(DISCOVER_TTL_MS),
    }


async def list_tools(app: web.Application, params: Params) -> Result:
    _single_page(params)
    return {"tools": [_tool(agent) for agent in app[SELECTOR].agents], **_hints(LIST_TTL_MS)}


def _tool(agent: Agent) -> Result:
    task = {"type": "string", "description": "What to do", "maxLength": MAX_TEXT_CHARS}
    return {
        "name": agent.id,
        "title": agent.name,
        "description": f"{agent.description} Skills: {', '.join(agent.skills)}.",
        "inputSchema": {
            "type": "object",
            "properties": {"task": task},
            "required": ["task"],
            "additionalProperties": False,
        },
    }


async def call_tool(app: web.Application, params: Params) -> Result:
    selector = app[SELECTOR]
    name = params.get("name")
    agent = next((agent for agent in selector.agents if agent.id == name), None)
    if agent is None:
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {name!r}")
    arguments = params.get("arguments", {})
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "arguments: expected an object")
    # Bad arguments are the model's to fix: a tool execution error, not a protocol error.
    task = arguments.get("task")
    if set(arguments) - {"task"}:
        return _tool_error("only the argument task is accepted")
    if not isinstance(task, str) or not task.strip() or len(task) > MAX_TEXT_CHARS:
        return _tool_error(f"task: expected a non-empty string of at most {MAX_TEXT_CHARS} chars")
    await asyncio.sleep(app[SETTINGS].select_latency)  # stands in for the agent's LLM call
    ranked = selector.rank(task, len(selector.agents))
    rank, fit = next((n, r) for n, r in enumerate(ranked, 1) if r.agent.id == agent.id)
    best = ranked[0].agent
    text = f"{agent.name} takes the task (fit {fit.score:.2f}, rank {rank} of {len(ranked)})."
    if best.id != agent.id:
        text += f" {best.name} ({best.id}) fits it better."
    outcome = {"agent": agent.id, "rank": rank, "score": round(fit.score, 4), "best": best.id}
    return {
        "content": [{"type": "text", "text": text}],
        "structuredContent": outcome,
        "isError": False,
    }


def _tool_error(message: str) -> Result:
    return {"content": [{"type": "text", "text": message}], "isError": True}


async def list_resources(app: web.Application, params: Params) -> Result:
    documents = app[DOCUMENTS]
    start = _offset(params.get("cursor"), len(documents))
    page = documents[start : start + PAGE_SIZE]
    result: Result = {"resources": [_resource(document) for document in page]}
    if start + PAGE_SIZE < len(documents):
        result["nextCursor"] = str(start + PAGE_SIZE)
    return {**result, **_hints(LIST_TTL_MS)}


def _offset(cursor: object, total: int) -> int:
    """Where a page starts: the cursor is the offset this server handed out."""
    if cursor is None:
        return 0
    if isinstance(cursor, str) and re.fullmatch(r"[1-9][0-9]*", cursor, re.ASCII):
        offset = int(cursor)
        if offset < total and offset % PAGE_SIZE == 0:
            return offset
    raise RpcError(INVALID_PARAMS, "Invalid cursor")


def _single_page(params: Params) -> None:
    if "cursor" in params:
        raise RpcError(INVALID_PARAMS, "Invalid cursor: this list has one page")


def _resource(document: Document) -> Result:
    return {
        "uri": document_uri(document.id),
        "name": f"document-{document.id}",
        "title": document.title,
        "description": f"{document.kind} note, {document.topic}",
        "mimeType": DOCUMENT_MIME,
    }


async def list_templates(app: web.Application, params: Params) -> Result:
    _single_page(params)
    template = {
        "uriTemplate": DOCUMENT_URI,
        "name": "help-document",
        "title": "Help-centre document",
        "mimeType": DOCUMENT_MIME,
    }
    return {"resourceTemplates": [template], **_hints(LIST_TTL_MS)}


async def read_resource(app: web.Application, params: Params) -> Result:
    uri = params.get("uri")
    document = find_document(app[DOCUMENTS], uri)
    if document is None:
        raise RpcError(INVALID_PARAMS, "Resource not found", data={"uri": uri})
    text = f"# {document.title}\n\n{document.body}\n"
    contents = [{"uri": uri, "mimeType": DOCUMENT_MIME, "text": text}]
    return {"contents": contents, **_hints(READ_TTL_MS)}


def find_document(documents: Sequence[Document], uri: object) -> Document | None:
    """The document ``uri`` names, in its one spelling (ids count from 1, in order)."""
    found = _DOCUMENT_URI.fullmatch(uri) if isinstance(uri, str) else None
    index = int(found.group(1)) - 1 if found else -1
    return documents[index] if 0 <= index < len(documents) else None


Method = Callable[[web.Application, Params], Awaitable[Result]]
METHODS: dict[str, Method] = {
    "server/discover": discover,
    "tools/list": list_tools,
    "tools/call": call_tool,
    "resources/list": list_resources,
    "resources/templates/list": list_templates,
    "resources/read": read_resource,
}


async def mcp_endpoint(request: web.Request) -> web.Response:
    """One JSON-RPC message per POST, answered as JSON (or an event stream, for a client
    that accepts only that). Calls are counted per method in ``/_stats``."""
    if not origin_allowed(request.headers.get("Origin")):
        return RpcError(INVALID_REQUEST, "Origin not allowed", status=403).response(None)
    try:
        call = read_message(await request.read())
    except RpcError as error:
        return error.response(None)
    request.app[MCP_CALLS][call.method if call.method in METHODS else "other"] += 1
    if call.id is None:
        return web.Response(status=202)  # a notification: accepted, nothing to answer
    try:
        check_headers(request.headers, call)
        method = METHODS.get(call.method)
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {call.method}", status=404)
        result = await method(request.app, call.params)
    except RpcError as error:
        return error.response(call.id)
    return answer(call.id, {"resultType": "complete", **result}, request.headers.get("Accept"))
