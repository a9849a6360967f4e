"""The reference agent service and sidecache as child processes, for the demo and benchmarks.

Like the embedded Redis and PostgreSQL, each child listens on a loopback port, logs into a
private temp dir, is polled (with a deadline) until it answers, and is stopped when the
object is closed, at interpreter exit, or (on Linux) when the parent process dies.
Optionally each is pinned to some CPU cores with ``taskset``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from examples.embedded import HOST, _ChildServer, free_port

ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: get SIGTERM when the parent dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def pinned(command: list[str], cpus: Sequence[int] | None) -> list[str]:
    """``command`` run on the given CPU cores (unchanged when ``taskset`` is missing)."""
    if not cpus or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", ",".join(map(str, cpus)), *command]


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """True when a GET of ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C does, so every ``finally`` and exit callback runs and
    every child is stopped."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Child(_ChildServer):
    """A child server on a loopback port, optionally pinned to ``cpus``, ready when
    ``ready_url`` answers 2xx. Subclasses give ``_command`` and ``ready_url``."""

    def __init__(self, port: int | None, cpus: Sequence[int] | None, start_timeout: float):
        self.cpus = tuple(cpus) if cpus else None
        super().__init__(port, start_timeout)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ready_url(self) -> str:
        raise NotImplementedError

    def _python(self, *args: str) -> list[str]:
        """A command line running this repository's Python with ``args``, pinned."""
        return pinned([sys.executable, *args], self.cpus)

    def _spawn_options(self) -> dict[str, Any]:
        env = dict(os.environ)
        # examples/ is not an installed package: make it importable from the temp dir.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # A session of its own: a Ctrl-C in the terminal reaches the parent, which then stops
        # the children in order (proxy before upstream before the stores).
        return {"env": env, "start_new_session": True, "preexec_fn": _die_with_parent}

    def _is_ready(self) -> bool:
        return http_ok(self.ready_url)

    def log_tail(self, lines: int = 20) -> str:
        return self._log_tail(lines)


class AgentService(Child):
    """``python -m examples.agent_service`` on a loopback port."""

    name = "agent-service"

    def __init__(
        self,
        pg_dsn: str | None = None,
        *,
        select_latency: float = 0.05,
        port: int | None = None,
        cpus: Sequence[int] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.pg_dsn = pg_dsn
        self.select_latency = select_latency
        super().__init__(port, cpus, start_timeout)

    @property
    def ready_url(self) -> str:
        return f"{self.url}/healthz"

    def _command(self) -> list[str]:
        args = ["-m", "examples.agent_service", "--host", HOST, "--port", str(self.port)]
        args += ["--select-latency", str(self.select_latency)]
        if self.pg_dsn:
            args += ["--pg-dsn", self.pg_dsn]
        return self._python(*args)


class Sidecache(Child):
    """``sidecache run`` with a given config file, on loopback proxy and admin ports."""

    name = "sidecache"

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        upstream: str,
        *,
        port: int | None = None,
        admin_port: int | None = None,
        cpus: Sequence[int] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.config_path = Path(config_path)
        self.upstream = upstream
        self.admin_port = admin_port or free_port()
        super().__init__(port, cpus, start_timeout)

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    @property
    def ready_url(self) -> str:
        return f"{self.admin_url}/readyz"

    def _command(self) -> list[str]:
        return self._python(
            "-m", "proxy.cli", "run",
            "--config", str(self.config_path),
            "--upstream", self.upstream,
            "--host", HOST,
            "--port", str(self.port),
            "--admin-port", str(self.admin_port),
        )  # fmt: skip
