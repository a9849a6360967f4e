"""What happened to one request, as one value: it renders the ``Cache-Status`` header
(RFC 9211), the ``cache`` label of the request metrics and the access log's ``cache`` field,
so no answer assembles them from fragments."""

from __future__ import annotations

import functools
from dataclasses import dataclass

#: Product name in ``Cache-Status`` (RFC 9211 §2: the cache's identifier).
CACHE_NAME = "sidecache"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's fate. ``label`` is the low-cardinality metric label: ``hit``,
    ``semantic``, ``stale``, ``miss``, ``bypass``, ``pass`` or ``error``."""

    label: str
    hit: bool = False
    #: RFC 9211 ``fwd``: why the request went to the upstream (bypass, miss, request, stale).
    fwd: str | None = None
    #: The upstream's status when it differs in kind from the answer's (a 304 revalidation).
    fwd_status: int | None = None
    stored: bool = False
    collapsed: bool = False
    detail: str | None = None

    @property
    def cache_status(self) -> str:
        parts = [CACHE_NAME]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.detail is not None:
            parts.append(f"detail={self.detail}")
        return "; ".join(parts)


@functools.cache  # (one value per tier: a hit's outcome is made once, not per request)
def fresh_hit(tier: str) -> Outcome:
    """Answered from a fresh entry of ``tier`` (``l1``, ``l2``, ``semantic``)."""
    return Outcome("semantic" if tier == "semantic" else "hit", hit=True, detail=tier)


def stale_hit(tier: str) -> Outcome:
    """Answered stale inside stale-while-revalidate; a refresh runs in the background."""
    return Outcome("stale", hit=True, fwd="stale", detail=tier)


def stale_accepted(tier: str) -> Outcome:
    """Answered stale because the request's ``max-stale`` accepts it (RFC 9111
    §5.2.1.2); nothing is refreshed."""
    return Outcome("stale", hit=True, detail=f"max-stale-{tier}")


def unanswered(why: str) -> Outcome:
    """Neither served from cache nor forwarded (``only-if-cached`` with nothing usable)."""
    return Outcome("miss", detail=why)


def stale_on_error(tier: str) -> Outcome:
    """The upstream failed; answered with a stale entry inside stale-if-error."""
    return Outcome("stale", fwd="stale", detail=f"stale-if-error-{tier}")


def fetched(
    fwd: str, *, stored: bool, collapsed: bool = False, revalidated: bool = False
) -> Outcome:
    """Answered by the upstream (possibly through another request's call, ``collapsed``)."""
    return Outcome(
        "miss",
        fwd=fwd,
        fwd_status=304 if revalidated else None,
        stored=stored,
        collapsed=collapsed,
    )


def streamed(fwd: str, collapsed: bool = False) -> Outcome:
    """The upstream's answer was too big or endless to buffer: relayed as it arrives (and,
    ``collapsed``, shared live with an identical request's stream already under way)."""
    return Outcome("miss", fwd=fwd, collapsed=collapsed, detail="stream")


def passed(label: str, fwd: str, detail: str | None = None) -> Outcome:
    """Relayed without the cache: no route (``pass``), the request bypassed it
    (``bypass``; ``detail`` says why when its mode refused it), or a miss the cache cannot
    store (``miss``)."""
    return Outcome(label, fwd=fwd, detail=detail)


def failed(fwd: str, reason: str) -> Outcome:
    """The upstream could not be reached or did not answer in time."""
    return Outcome("error", fwd=fwd, detail=reason)
