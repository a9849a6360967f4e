"""The outcome value renders Cache-Status (RFC 9211) and the metric label in one place."""

import pytest

from core.outcome import (
    Outcome,
    failed,
    fetched,
    fresh_hit,
    passed,
    stale_hit,
    stale_on_error,
    streamed,
)


@pytest.mark.parametrize(
    ("outcome", "cache_status", "label"),
    [
        (fresh_hit("l1"), "sidecache; hit; detail=l1", "hit"),
        (fresh_hit("l2"), "sidecache; hit; detail=l2", "hit"),
        (fresh_hit("semantic"), "sidecache; hit; detail=semantic", "semantic"),
        (stale_hit("l1"), "sidecache; hit; fwd=stale; detail=l1", "stale"),
        (stale_on_error("l2"), "sidecache; fwd=stale; detail=stale-if-error-l2", "stale"),
        (fetched("miss", stored=True), "sidecache; fwd=miss; stored", "miss"),
        (fetched("miss", stored=False), "sidecache; fwd=miss", "miss"),
        (fetched("request", stored=True), "sidecache; fwd=request; stored", "miss"),
        (
            fetched("miss", stored=True, collapsed=True),
            "sidecache; fwd=miss; stored; collapsed",
            "miss",
        ),
        (
            fetched("stale", stored=True, revalidated=True),
            "sidecache; fwd=stale; fwd-status=304; stored",
            "miss",
        ),
        (streamed("miss"), "sidecache; fwd=miss; detail=stream", "miss"),
        (passed("pass", "bypass"), "sidecache; fwd=bypass", "pass"),
        (passed("bypass", "bypass"), "sidecache; fwd=bypass", "bypass"),
        (failed("miss", "timeout"), "sidecache; fwd=miss; detail=timeout", "error"),
        (Outcome("error", detail="body-timeout"), "sidecache; detail=body-timeout", "error"),
    ],
)
def test_each_outcome_renders_its_cache_status_and_label(outcome, cache_status, label):
    assert outcome.cache_status == cache_status
    assert outcome.label == label
