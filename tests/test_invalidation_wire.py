"""A purge as it travels between replicas (core/invalidation.py): every target survives
the trip, and what other replica versions send is read the same way."""

from __future__ import annotations

import json

import pytest

from core.invalidation import ByRoute, ByTag, Everything, Invalidation


@pytest.mark.parametrize(
    "target", [ByRoute("search", 7), ByTag("doc:42"), ByTag("ünïcode tag"), Everything()]
)
def test_every_target_round_trips(target):
    sent = Invalidation(target, origin="replica-a")
    assert Invalidation.from_json(sent.to_json()) == sent


@pytest.mark.parametrize(
    ("wire", "target"),
    [
        ({"kind": "route", "value": "r", "generation": 3}, ByRoute("r", 3)),
        ({"kind": "tag", "value": "t", "generation": 0}, ByTag("t")),
        ({"kind": "all", "value": "", "generation": 0}, Everything()),
    ],
)
def test_the_wire_format_is_kept(wire, target):
    raw = json.dumps({**wire, "origin": "o"})
    assert Invalidation.from_json(raw) == Invalidation(target, "o")
    assert json.loads(Invalidation(target, "o").to_json()) == {**wire, "origin": "o"}


@pytest.mark.parametrize(
    "raw",
    [
        '{"kind": "key", "value": "k", "generation": 0, "origin": "o"}',
        '{"kind": "route", "value": "r", "generation": "x", "origin": "o"}',
        '{"kind": "tag", "value": "t"}',
        "not json",
    ],
)
def test_malformed_messages_are_refused(raw):
    with pytest.raises((ValueError, KeyError)):
        Invalidation.from_json(raw)
