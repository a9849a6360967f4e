"""Requests read straight off a socket, for the byte-level test services that play an
upstream (tests/test_upstream.py, tests/test_upstream_client.py): they see exactly what
sidecache sent, framing included."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

#: A chunked request body bigger than this fails the test (it would be a runaway).
MAX_BODY = 1 << 20


@dataclass
class Seen:
    """One request as the service read it off the wire."""

    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader, connection: int) -> Seen | None:
    """The next request on a connection; ``None`` when the client closed it between two."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    method, target, _ = request_line.split(" ")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Seen(connection, method, target, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while len(body) <= MAX_BODY:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]
    raise AssertionError("request body over the test upstream's limit")
