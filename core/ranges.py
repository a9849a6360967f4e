"""Byte ranges (RFC 9110 §14): a ``Range`` request answered from a stored complete response.

One range of bytes is answered ``206`` with its ``Content-Range``. Anything else (several
ranges, a unit other than ``bytes``, a malformed or unsatisfiable range, an ``If-Range``
that does not name the stored response's strong ETag) is answered with the whole stored
response: RFC 9110 §14.2 lets a server ignore ``Range``, so the full ``200`` is always a
correct answer, and sidecache never has to build a multipart body or a ``416``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: One ``bytes`` range-spec: ``first-last``, ``first-`` or ``-suffix`` (§14.1.2).
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")  # (ASCII digits only: int() takes others)


def byte_range(value: str | None, length: int) -> tuple[int, int] | None:
    """The one satisfiable range ``(first, last)`` (inclusive) that ``Range: value`` asks
    of ``length`` bytes, clipped to them; ``None``: answer the whole response."""
    if not value or length <= 0:
        return None
    unit, sep, ranges = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in ranges:
        return None
    match = _SPEC.fullmatch(ranges.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            return None  # (``-`` or a zero-length suffix: nothing to send)
        return max(0, length - int(last)), length - 1
    start = int(first)
    end = length - 1 if not last else min(int(last), length - 1)
    if start >= length or (last and int(last) < start):
        return None  # unsatisfiable or invalid (first > last): ignored, §14.2
    return start, end


def if_range_allows(request_headers: Mapping[str, str], stored: Mapping[str, str]) -> bool:
    """Whether ``Range`` may be honoured: no ``If-Range``, or one equal to the stored
    response's strong ETag (§13.1.5: a weak tag never matches; a date is not compared
    here, so the whole response is sent, which is always correct)."""
    condition = request_headers.get("If-Range")
    if condition is None:
        return True
    etag = stored.get("ETag")
    condition = condition.strip()
    return etag is not None and condition.startswith('"') and condition == etag.strip()


def content_range(first: int, last: int, length: int) -> str:
    """The ``Content-Range`` of a single part (§14.4)."""
    return f"bytes {first}-{last}/{length}"
