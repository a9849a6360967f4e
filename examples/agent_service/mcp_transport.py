"""The streamable-HTTP side of the service's MCP endpoint (revision 2026-07-28): reading one
JSON-RPC message from a POST, checking the headers that mirror it, writing the answer.

A server must refuse a request whose headers are missing or disagree with its body
(transport §"Server Validation"): a gateway in front may have routed, rate-limited or cached
by those headers, and acting on a different body would defeat it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

VERSION = "2026-07-28"
SUPPORTED_VERSIONS = (VERSION,)
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
#: Methods whose ``Mcp-Name`` header mirrors a parameter (transport §"Standard Request Headers").
NAMED = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
UNSUPPORTED_VERSION = -32022

#: Origins a browser may call from: the service is for agents on the same host or pod, and a
#: page of any other origin is refused (DNS rebinding, transport §"Security").
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_SENTINEL = re.compile(r"=\?base64\?(.*)\?=", re.DOTALL)


class RpcError(Exception):
    """A JSON-RPC error answer, with the HTTP status the transport gives it: ``200`` for an
    error of the method itself, ``4xx`` for a request refused before it ran."""

    def __init__(self, code: int, message: str, *, status: int = 200, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data

    def response(self, request_id: int | str | None) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        body = {"jsonrpc": "2.0", "id": request_id, "error": error}
        return web.json_response(body, status=self.status)


def mismatch(reason: str) -> RpcError:
    return RpcError(HEADER_MISMATCH, f"Header mismatch: {reason}", status=400)


@dataclass(frozen=True)
class Call:
    """One JSON-RPC message from the client; ``id`` is ``None`` for a notification."""

    method: str
    id: int | str | None
    params: dict[str, Any]


def read_message(body: bytes) -> Call:
    """The POST body as one JSON-RPC request or notification (``RpcError`` otherwise)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise RpcError(PARSE_ERROR, "Parse error: the body is not JSON", status=400) from None
    if (
        not isinstance(message, dict)
        or message.get("jsonrpc") != "2.0"
        or not isinstance(message.get("method"), str)
    ):
        raise RpcError(
            INVALID_REQUEST, "Invalid request: expected one JSON-RPC request", status=400
        )
    params = message.get("params", {})
    request_id = message.get("id")
    # JSON-RPC ids are strings or numbers; this server takes integers and strings.
    valid_id = isinstance(request_id, str) or (
        isinstance(request_id, int) and not isinstance(request_id, bool)
    )
    if not isinstance(params, dict) or ("id" in message and not valid_id):
        raise RpcError(INVALID_REQUEST, "Invalid request: bad params or id", status=400)
    return Call(message["method"], request_id, params)


def check_headers(headers: Mapping[str, str], call: Call) -> None:
    """Refuse (``RpcError``) a request whose protocol version is not this server's, or whose
    ``MCP-Protocol-Version``, ``Mcp-Method`` or ``Mcp-Name`` is missing or disagrees with
    the body."""
    sent = headers.get("MCP-Protocol-Version")
    if sent is None:
        raise mismatch(f"MCP-Protocol-Version header missing (this server speaks {VERSION})")
    if sent not in SUPPORTED_VERSIONS:
        data = {"supported": list(SUPPORTED_VERSIONS), "requested": sent}
        raise RpcError(UNSUPPORTED_VERSION, "Unsupported protocol version", status=400, data=data)
    meta = call.params.get("_meta")
    in_body = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    if in_body != sent:
        raise mismatch(f"MCP-Protocol-Version header {sent!r} does not match _meta {in_body!r}")
    method = headers.get("Mcp-Method")
    if method != call.method:
        raise mismatch(f"Mcp-Method header {method!r} does not match method {call.method!r}")
    field = NAMED.get(call.method)
    if field is None:
        return
    name = headers.get("Mcp-Name")
    if name is None:
        raise mismatch("Mcp-Name header missing")
    if decode_mirrored(name) != call.params.get(field):
        raise mismatch(f"Mcp-Name header does not match params.{field}")


def decode_mirrored(value: str) -> str | None:
    """A mirrored header value with its Base64 sentinel (``=?base64?…?=``) decoded;
    ``None`` when the sentinel does not hold Base64 of UTF-8 text."""
    sentinel = _SENTINEL.fullmatch(value)
    if sentinel is None:
        return value
    try:
        return base64.b64decode(sentinel.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def origin_allowed(origin: str | None) -> bool:
    """No ``Origin`` (not a browser), or a page served from this host."""
    return origin is None or urlsplit(origin).hostname in LOCAL_HOSTS


def answer(request_id: int | str, result: dict[str, Any], accept: str | None) -> web.Response:
    """The JSON-RPC response: JSON, or an event stream holding it when the client accepts
    only that."""
    message = {"jsonrpc": "2.0", "id": request_id, "result": result}
    if not only_event_stream(accept):
        return web.json_response(message)
    event = f"event: message\ndata: {json.dumps(message)}\n\n"
    return web.Response(text=event, content_type="text/event-stream")


def only_event_stream(accept: str | None) -> bool:
    media = {item.split(";")[0].strip().lower() for item in (accept or "").split(",")}
    return "text/event-stream" in media and not media & {"application/json", "application/*", "*/*"}
