"""A minimal, fast upstream for the benchmarks: ``python -m bench.upstream --port N``.

It answers like the reference agent service would, without the work behind it:

``POST /agents/select[?delay_ms=N]``
    a fixed ~700-byte JSON ranking, after ``N`` ms when asked (the coalescing trial), else
    after ``--delay-ms`` (default 0: at once; 20 plays an origin that takes 20 ms to answer);
``GET /agents``
    a fixed ~3 KB JSON catalogue (the pass-through scenarios);
``GET /_stats`` / ``DELETE /_stats``
    calls served per ``METHOD path`` since start or the last reset: how the benchmark checks
    that a "hit" scenario really made no upstream calls and a "miss" scenario made one each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

from aiohttp import web

CALLS = web.AppKey("calls", Counter)
#: Seconds every ``POST /agents/select`` waits before answering (``--delay-ms``).
DELAY = web.AppKey("delay", float)

SELECTION = json.dumps(
    {
        "task": "Where is my parcel? The tracking page has not changed in four days",
        "agents": [
            {"id": "shipping-tracker", "name": "Shipping Tracker", "score": 0.8731},
            {"id": "returns-coordinator", "name": "Returns Coordinator", "score": 0.6112},
            {"id": "billing-specialist", "name": "Billing Specialist", "score": 0.4409},
        ],
        "explanation": "Ranked by similarity of the task to each agent's profile and skills, "
        "blended with keyword matches; the top agent handles parcel tracking and couriers.",
        "model": "bench-upstream",
        "padding": "x" * 200,
    }
).encode()

CATALOGUE = json.dumps(
    {
        "agents": [
            {
                "id": f"agent-{n:02d}",
                "name": f"Specialised agent number {n}",
                "description": "Handles one kind of request end to end for a team of people.",
                "skills": ["triage", "drafting", "lookups", "follow-ups"],
            }
            for n in range(20)
        ]
    }
).encode()


async def select(request: web.Request) -> web.Response:
    request.app[CALLS]["POST /agents/select"] += 1
    await request.read()
    delay_ms = request.query.get("delay_ms")
    delay = float(delay_ms) / 1000 if delay_ms else request.app[DELAY]
    if delay > 0:
        await asyncio.sleep(delay)
    return web.Response(body=SELECTION, content_type="application/json")


async def catalogue(request: web.Request) -> web.Response:
    request.app[CALLS]["GET /agents"] += 1
    return web.Response(body=CATALOGUE, content_type="application/json")


async def show_stats(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    return web.json_response({"calls": dict(calls), "total": calls.total()})


async def reset_stats(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    before = {"calls": dict(calls), "total": calls.total()}
    calls.clear()
    return web.json_response(before)


def build_app(delay: float = 0.0) -> web.Application:
    app = web.Application()
    app[CALLS] = Counter()
    app[DELAY] = delay
    app.router.add_post("/agents/select", select)
    app.router.add_get("/agents", catalogue)
    app.router.add_get("/_stats", show_stats)
    app.router.add_delete("/_stats", reset_stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="how long POST /agents/select takes to answer (default 0; ?delay_ms=N overrides)",
    )
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms: at least 0")
    try:
        import uvloop  # the proxy uses it when installed; so does its upstream
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    app = build_app(args.delay_ms / 1000)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
