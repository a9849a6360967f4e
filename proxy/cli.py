"""The ``sidecache`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import metadata

from core.config import Config, load_config, override
from core.errors import ConfigError
from core.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sidecache", description="Caching sidecar reverse proxy for agent services."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the proxy and admin ports")
    run.add_argument("--config", "-c", default="config.yaml", help="YAML config file")
    run.add_argument("--upstream", help="upstream URL (overrides upstream.url)")
    run.add_argument("--host", help="proxy bind address (overrides server.host)")
    run.add_argument("--port", type=int, help="proxy port (overrides server.port)")
    run.add_argument("--admin-host", help="admin bind address (overrides server.admin_host)")
    run.add_argument("--admin-port", type=int, help="admin port (overrides server.admin_port)")
    run.add_argument("--redis-url", help='Redis URL for L2; "" disables L2 (cache.l2.url)')
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ... (logging.level)")
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file")

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.file)
            print(f"{args.file}: ok ({len(config.routes)} routes)")
            return 0
        config = _run_config(args)
    except ConfigError as exc:
        print(f"sidecache: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging)
    if config.server.workers > 1 and args.worker is None:
        from proxy.workers import supervise

        return supervise(sys.argv[1:] if argv is None else argv, config.server.workers)
    _use_uvloop()
    from proxy.app import serve  # aiohttp is imported only when serving

    asyncio.run(serve(config, worker=args.worker or 0))
    return 0


def _run_config(args: argparse.Namespace) -> Config:
    return override(
        load_config(args.config),
        **{
            "upstream.url": args.upstream,
            "server.host": args.host,
            "server.port": args.port,
            "server.admin_host": args.admin_host,
            "server.admin_port": args.admin_port,
            "cache.l2.url": args.redis_url,
            "logging.level": args.log_level,
        },
    )


def _version() -> str:
    try:
        return metadata.version("sidecache")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    sys.exit(main())
