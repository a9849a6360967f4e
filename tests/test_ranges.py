"""Byte-range arithmetic (RFC 9110 §14), rule by rule: which one range a ``Range`` request
gets from a stored complete response, or the whole response."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from core.ranges import byte_range, content_range, if_range_allows


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        pytest.param("bytes=0-1", 11, (0, 1), id="first-last"),
        pytest.param("bytes=1-", 11, (1, 10), id="no-last"),
        pytest.param("bytes=-3", 11, (8, 10), id="suffix"),
        pytest.param("bytes=-30", 11, (0, 10), id="suffix-longer-than-body"),
        pytest.param("bytes=5-100", 11, (5, 10), id="last-clipped"),
        pytest.param("bytes=10-10", 11, (10, 10), id="last-byte"),
        pytest.param("BYTES = 0-1 ", 11, (0, 1), id="unit-any-case-whitespace"),
        pytest.param("bytes=11-", 11, None, id="unsatisfiable-start"),
        pytest.param("bytes=-0", 11, None, id="empty-suffix"),
        pytest.param("bytes=3-1", 11, None, id="last-before-first"),
        pytest.param("bytes=0-1,3-4", 11, None, id="several-ranges"),
        pytest.param("bytes=-", 11, None, id="no-numbers"),
        pytest.param("bytes=a-b", 11, None, id="not-numbers"),
        pytest.param("bytes=\u0661-\u0663", 11, None, id="non-ascii-digits"),
        pytest.param("items=0-1", 11, None, id="other-unit"),
        pytest.param("bytes 0-1", 11, None, id="no-equals"),
        pytest.param("bytes=0-1", 0, None, id="empty-body"),
        pytest.param("", 11, None, id="empty"),
        pytest.param(None, 11, None, id="absent"),
    ],
)
def test_byte_range(value, length, expected):
    """RFC 9110 §14.1.2: ``first-last`` (last clipped to the body), ``first-``, ``-suffix``;
    §14.2: anything else (several ranges, an unsatisfiable or invalid one, another unit) is
    ignored and the whole response sent, which a server may always do."""
    assert byte_range(value, length) == expected


@pytest.mark.parametrize(
    ("request_headers", "stored", "expected"),
    [
        pytest.param({}, {}, True, id="no-if-range"),
        pytest.param({"If-Range": '"a"'}, {"ETag": '"a"'}, True, id="same-strong-etag"),
        pytest.param({"If-Range": '"a"'}, {"ETag": '"b"'}, False, id="other-etag"),
        pytest.param({"If-Range": 'W/"a"'}, {"ETag": 'W/"a"'}, False, id="weak-never-matches"),
        pytest.param({"If-Range": '"a"'}, {}, False, id="nothing-stored-to-match"),
        pytest.param(
            {"If-Range": "Tue, 14 Nov 2023 22:00:00 GMT"},
            {"Last-Modified": "Tue, 14 Nov 2023 22:00:00 GMT"},
            False,
            id="date-not-compared-whole-response-sent",
        ),
    ],
)
def test_if_range_allows(request_headers, stored, expected):
    """RFC 9110 §13.1.5: ``Range`` is honoured only when ``If-Range`` (if any) names the
    stored strong ETag; otherwise the whole response is the answer."""
    assert if_range_allows(CIMultiDict(request_headers), CIMultiDict(stored)) is expected


def test_content_range():
    """RFC 9110 §14.4: ``bytes first-last/complete-length``."""
    assert content_range(8, 10, 11) == "bytes 8-10/11"
