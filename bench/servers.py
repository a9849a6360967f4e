"""The servers a benchmark run starts: the bench upstream, sidecache configs, nginx.

All listen on loopback ports, are pinned with ``taskset`` and are stopped with the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil
import yaml

from core import config as sidecache_config
from examples.demo import has_option
from examples.processes import Child, pinned

SELECT_ROUTE = {
    "name": "agents-select",
    "method": "POST",
    "path": "/agents/select",
    "ttl": "5m",
    "ignore_fields": ["request_id"],
}


class BenchUpstream(Child):
    """``python -m bench.upstream``: the upstream every target forwards to, answering at
    once, or (``delay_ms``) like an origin that takes that long per selection."""

    name = "bench-upstream"

    def __init__(
        self,
        *,
        delay_ms: float = 0.0,
        cpus: Sequence[int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.delay_ms = delay_ms
        super().__init__(None, cpus, start_timeout)

    @property
    def ready_url(self) -> str:
        return f"{self.url}/_stats"

    def _command(self) -> list[str]:
        return self._python(
            "-m", "bench.upstream", "--port", str(self.port), "--delay-ms", f"{self.delay_ms:g}"
        )  # fmt: skip


def write_sidecache_config(
    path: Path, upstream: str, *, l1: bool = True, redis_url: str = "", workers: int = 1
) -> Path:
    """A sidecache config with the shipped agent-selection route and default tiers."""
    server: dict[str, object] = {"host": "127.0.0.1", "admin_host": "127.0.0.1"}
    if workers != 1:
        server["workers"] = workers
    if has_option(sidecache_config.ServerConfig, "drain_delay"):
        server["drain_delay"] = "0s"  # nothing to drain from in a benchmark
    config = {
        "server": server,
        "upstream": {"url": upstream},
        "cache": {"l1": {"enabled": l1}, "l2": {"url": redis_url}},
        "routes": [SELECT_ROUTE],
        "logging": {"level": "WARNING"},
    }
    sidecache_config.config_from_dict(config)  # fail now, naming the field, if the schema moved
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def nginx_available() -> bool:
    return shutil.which("nginx") is not None


class Nginx(Child):
    """nginx with one worker, ``proxy_cache`` on ``POST /agents/select`` (the body in the
    key; a request with ``Cache-Control: no-store`` neither looks up nor stores, as in
    sidecache) and plain proxying of ``GET /agents``, in the foreground as our child."""

    name = "nginx"
    stop_signal = signal.SIGQUIT  # graceful: finish requests, then exit

    def __init__(
        self, upstream_port: int, *, cpus: Sequence[int] | None = None, start_timeout: float = 30
    ) -> None:
        self.upstream_port = upstream_port
        super().__init__(None, cpus, start_timeout)
        self.conf_path = self.dir / "nginx.conf"
        # The cache on tmpfs where there is one: nginx at its best, and in memory like
        # sidecache's L1. (On this machine's ext4 disk a miss costs ~20x more nginx CPU.)
        shm = Path("/dev/shm")
        memory = shm.is_dir() and os.access(shm, os.W_OK)
        self.cache_dir = Path(
            tempfile.mkdtemp(prefix="sidecache-nginx-", dir=shm if memory else self.dir)
        )

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    @property
    def ready_url(self) -> str:
        return f"{self.url}/_ready"

    def _prepare(self) -> None:
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.conf_path.write_text(self.config())

    def _command(self) -> list[str]:
        error_log = str(self.dir / "error.log")
        command = ["nginx", "-p", str(self.dir), "-c", str(self.conf_path), "-e", error_log]
        return pinned(command, self.cpus)

    def config(self) -> str:
        d = self.dir
        # As root, nginx would run its worker as "nobody", which cannot write our temp dir.
        user = "user root root;" if os.geteuid() == 0 else ""
        return f"""
{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # aiohttp sets no limit on requests per client connection; nginx's default is 1000.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    proxy_cache_path {self.cache_dir} levels=1:2 keys_zone=bench:32m max_size=2g inactive=10m
                     use_temp_path=off;
    # A request saying Cache-Control: no-store bypasses the cache, as sidecache's does.
    map $http_cache_control $request_no_store {{
        "~*no-store" 1;
        default 0;
    }}
    upstream backend {{
        server 127.0.0.1:{self.upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location = /_ready {{ return 200 "ok\\n"; }}
        location = /agents {{ proxy_pass http://backend; }}
        location / {{
            proxy_pass http://backend;
            proxy_cache bench;
            proxy_cache_methods POST;
            # Like sidecache's key: method, path and query, tenant, body.
            proxy_cache_key "$request_method|$request_uri|$http_authorization|$request_body";
            proxy_cache_valid 200 5m;
            proxy_cache_bypass $request_no_store;
            proxy_no_cache $request_no_store;
            # Coalescing, as sidecache's single-flight does (nginx polls the lock every 500ms).
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            # $request_body is only set when the body is read into one memory buffer.
            client_body_buffer_size 64k;
            client_body_in_single_buffer on;
            client_max_body_size 64k;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join((self.dir / "error.log").read_text(errors="replace").splitlines()[-lines:])


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (nginx's worker, sidecache's workers)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU time used so far by the living processes among ``processes``."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def pin_running(pid: int, cpus: Sequence[int] | None) -> None:
    """Pin every thread of a running process (e.g. the embedded Redis) to ``cpus``."""
    if cpus and shutil.which("taskset"):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(pid)],
            check=True,
            capture_output=True,
        )


def listening_processes(pid: int, port: int) -> int:
    """How many processes of ``pid``'s tree listen on ``port`` (sidecache workers)."""
    count = 0
    for process in process_tree(pid):
        try:
            sockets = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets):
            count += 1
    return count
