"""Server-sent events (``text/event-stream``, WHATWG HTML §9.2): read incrementally as
bytes arrive, and written back.

Both agent protocols answer with event streams (MCP's streamable HTTP, OpenAI's
``stream: true``); a cache must find where one event ends to relay, store or replay it
event by event. The parser keeps each event's raw bytes as well as its fields, so a
replayed stream is the bytes the upstream sent, not a re-rendering of them.
"""

from __future__ import annotations

from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: its fields and the bytes it was read from (``raw`` ends with
    the blank line that dispatched it)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None
    raw: bytes = b""


class EventReader:
    """Turns a byte stream into events: ``feed`` what arrived, get the events it completed.

    Lines end with CRLF, LF or CR; a line starting with ``:`` is a comment; a blank line
    dispatches the event being read. An event with no ``data`` line is not dispatched (its
    bytes still count toward the next event's ``raw``, so nothing read is lost on replay).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._raw = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._started = False

    @property
    def pending(self) -> bytes:
        """Bytes read that no dispatched event holds yet (an unfinished event)."""
        return bytes(self._raw) + self._buffer

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer + chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            if buffer.startswith(_BOM):
                self._raw += _BOM
                buffer = buffer[len(_BOM) :]
        events: list[Event] = []
        start = 0
        while True:
            end, after = _line_end(buffer, start)
            if end < 0:
                break
            line = buffer[start:end]
            self._raw += buffer[start:after]
            start = after
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    def _line(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        text = value.decode("utf-8", "replace")
        if name == b"data":
            self._data.append(text)
        elif name == b"event":
            self._event = text
        elif name == b"id" and "\0" not in text:
            self._id = text
        elif name == b"retry" and text.isascii() and text.isdigit():
            self._retry = int(text)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = ""
            return None
        event = Event(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            retry=self._retry,
            raw=bytes(self._raw),
        )
        self._raw.clear()
        self._data.clear()
        self._event = ""
        self._retry = None
        return event


def _line_end(buffer: bytes, start: int) -> tuple[int, int]:
    """Where the line at ``start`` ends and the next one begins; ``(-1, -1)``: not yet
    known (a CR at the very end may be the first half of a CRLF)."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 == len(buffer):
            return -1, -1
        return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
    if lf >= 0:
        return lf, lf + 1
    return -1, -1


def encode(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """One event as it goes on the wire (every line of ``data`` its own ``data:`` line)."""
    lines = []
    if event is not None and event != "message":
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.extend(
        f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    )
    return ("\n".join(lines) + "\n\n").encode()
