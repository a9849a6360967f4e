"""``python -m examples.agent_service``: run the reference agent service."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from . import build_app


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.agent_service",
        description="Reference agent service (agent selection, document search, SSE runs, MCP).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    parser.add_argument(
        "--pg-dsn",
        default=None,
        help="PostgreSQL + pgvector DSN for /search; without it search runs in memory",
    )
    parser.add_argument(
        "--select-latency",
        type=float,
        default=0.05,
        help="simulated compute time of /agents/select in seconds (default %(default)s)",
    )
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.05,
        help="pause between /agents/run events in seconds (default %(default)s)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = build_app(args.pg_dsn, args.select_latency, step_delay=args.step_delay)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        # aiohttp's default access log line per request would dominate benchmark CPU
        access_log=logging.getLogger("aiohttp.access") if args.access_log else None,
    )


if __name__ == "__main__":
    main()
