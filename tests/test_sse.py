"""The event-stream reader and writer (core/sse.py), by the WHATWG parsing rules."""

from __future__ import annotations

import pytest

from core.sse import Event, EventReader, encode


def read_all(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    reader = EventReader()
    events = [event for chunk in chunks for event in reader.feed(chunk)]
    return events, reader.pending


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"data: a\n\n", [("message", "a", None)]),
        (b"data:a\n\n", [("message", "a", None)]),  # the space after ':' is optional
        (b"data:  a\n\n", [("message", " a", None)]),  # only one space is dropped
        (b"data: a\ndata: b\n\n", [("message", "a\nb", None)]),
        (b"event: update\nid: 7\ndata: x\n\n", [("update", "x", "7")]),
        (b"data: a\r\n\r\ndata: b\r\rdata: c\n\n", [("message", s, None) for s in "abc"]),
        (b": keep-alive\n\ndata: a\n\n", [("message", "a", None)]),  # comments only
        (b"event: ping\n\ndata: a\n\n", [("message", "a", None)]),  # no data: not sent
        (b"\xef\xbb\xbfdata: a\n\n", [("message", "a", None)]),  # a leading BOM
        (b"data\n\n", [("message", "", None)]),  # a field with no colon
        (b"data: a\n", []),  # not dispatched without the blank line
    ],
)
def test_events_are_read_by_the_parsing_rules(wire, expected):
    events, _ = read_all([wire])
    assert [(e.event, e.data, e.id) for e in events] == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_events_split_anywhere_read_the_same(size):
    wire = b"\xef\xbb\xbfevent: a\r\ndata: 1\r\n\r\n: c\rdata: 2\r\rdata: 3\n\n"
    whole, _ = read_all([wire])
    pieces, _ = read_all([wire[i : i + size] for i in range(0, len(wire), size)])
    assert [(e.event, e.data) for e in pieces] == [("a", "1"), ("message", "2"), ("message", "3")]
    assert pieces == whole


def test_raw_bytes_replay_the_stream_exactly():
    wire = b": hello\n\nevent: x\ndata: 1\n\ndata: 2\r\n\r\ndata: unfinished\n"
    events, pending = read_all([wire[:5], wire[5:]])
    assert b"".join(e.raw for e in events) + pending == wire


def test_retry_only_when_digits():
    events, _ = read_all([b"retry: 250\ndata: a\n\nretry: soon\ndata: b\n\n"])
    assert [e.retry for e in events] == [250, None]


@pytest.mark.parametrize(
    ("data", "event", "id"),
    [("a", None, None), ("a\nb", "update", "3"), ("", None, None), ('{"x": 1}', "message", None)],
)
def test_encode_round_trips(data, event, id):
    (read,), _ = read_all([encode(data, event, id)])
    assert (read.data, read.event, read.id) == (data, event or "message", id)


def test_encode_keeps_carriage_returns_out_of_lines():
    (read,), _ = read_all([encode("a\r\nb\rc")])
    assert read.data == "a\nb\nc"
