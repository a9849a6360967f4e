"""Helpers the rule tables share (tests/test_rules_*.py)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict


def h(*lines: str) -> CIMultiDict[str]:
    """Headers from ``"Name: value"`` lines; a repeated name stays a separate line."""
    out: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        out.add(name, value.strip())
    return out


def xfail(reason: str, raises: type[BaseException] | None = None) -> pytest.MarkDecorator:
    """A row stating the right behaviour of a rule that is wrong today (see ``reason``)."""
    return pytest.mark.xfail(strict=True, reason=reason, raises=raises)
