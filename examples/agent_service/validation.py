"""Reading and checking request bodies; every failure is a JSON 400 naming the field."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

MAX_TEXT_CHARS = 2000


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("body: expected a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("body: expected a JSON object")
    return body


def text_field(body: dict[str, Any], name: str) -> str:
    """A required, non-blank string field of bounded length."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{name}: expected a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise bad_request(f"{name}: longer than {MAX_TEXT_CHARS} characters")
    return value


def top_k_field(body: dict[str, Any], default: int, maximum: int) -> int:
    """The optional ``top_k``: an integer from 1 to ``maximum``."""
    value = body.get("top_k", default)
    # bool is an int subclass; true is not a count
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise bad_request(f"top_k: expected an integer from 1 to {maximum}")
    return value
