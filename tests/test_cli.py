"""The ``sidecache`` command as users run it: a real process, real ports, real signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
SIDECACHE = Path(sys.executable).parent / "sidecache"
STARTUP_DEADLINE = 20.0
EXIT_DEADLINE = 10.0


def sidecache(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SIDECACHE), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- check-config and --help ------------------------------------------------------------------


def test_check_config_accepts_the_shipped_file():
    result = sidecache("check-config", "config.yaml")

    assert result.returncode == 0, result.stderr
    assert "config.yaml: ok (2 routes)" in result.stdout


def test_check_config_rejects_a_bad_file_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "routes:\n"
        "  - {name: select, path: /agents/select}\n"
        "  - {name: search, path: /search, ttl: abc}\n"
    )

    result = sidecache("check-config", str(bad))

    assert result.returncode != 0
    assert 'routes[1].ttl: expected a duration like "5m", got "abc"' in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_rejects_a_missing_file(tmp_path):
    result = sidecache("check-config", str(tmp_path / "absent.yaml"))

    assert result.returncode != 0
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands():
    result = sidecache("--help")

    assert result.returncode == 0
    assert "run" in result.stdout
    assert "check-config" in result.stdout


def test_run_help_lists_the_deployment_flags():
    result = sidecache("run", "--help")

    assert result.returncode == 0
    flags = ("--config", "--upstream", "--host", "--port", "--admin-host", "--admin-port")
    for flag in (*flags, "--redis-url"):
        assert flag in result.stdout


def test_version_prints_the_installed_version():
    result = sidecache("--version")

    assert result.returncode == 0
    assert result.stdout.strip() == "sidecache 0.1.0"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cache: {semantic: {embedder: {kind: nonsense}}}\n", "cache.semantic.embedder.kind"),
        ("routes: [{name: s, path: /agents/%73elect}]\n", "routes[0].path"),
        ("routes: [{name: s, path: '/search?q=*'}]\n", "routes[0].path"),
        ("routes: [{name: s, path: /agents/select, method: PSOT}]\n", "routes[0].method"),
        ("routes: [{name: s, path: /s, tenant: {headers: []}}]\n", "routes[0].tenant.headers"),
        ("upstream: {url: 'http://a:1'}\nupstream: {url: 'http://b:2'}\n", "duplicate key"),
    ],
)
def test_check_config_refuses_configs_that_could_never_work(tmp_path, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)

    result = sidecache("check-config", str(bad))

    assert result.returncode == 2
    assert field in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_bad_flag_value_naming_the_field():
    flags = ["--upstream", "agents:8000", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]

    result = sidecache("run", "--config", "config.yaml", *flags, timeout=10)

    assert result.returncode != 0
    assert "upstream.url" in result.stderr
    assert "Traceback" not in result.stderr


# --- run --------------------------------------------------------------------------------------


@dataclass
class Running:
    """A ``sidecache run`` process and where it listens."""

    process: asyncio.subprocess.Process
    proxy_url: str
    admin_url: str
    log: Path


async def wait_until_serving(running: Running, port: int) -> None:
    """Poll until the admin port answers /healthz and the proxy port accepts connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_DEADLINE
    async with aiohttp.ClientSession() as session:
        while True:
            if running.process.returncode is not None:
                pytest.fail(f"sidecache exited with {running.process.returncode}:\n{_log(running)}")
            with contextlib.suppress(OSError, aiohttp.ClientError):
                async with session.get(f"{running.admin_url}/healthz") as response:
                    if response.status == 200:
                        _, writer = await asyncio.open_connection("127.0.0.1", port)
                        writer.close()
                        await writer.wait_closed()
                        return
            if loop.time() > deadline:
                pytest.fail(f"sidecache not serving after {STARTUP_DEADLINE}s:\n{_log(running)}")
            await asyncio.sleep(0.05)


def _log(running: Running) -> str:
    return running.log.read_text(errors="replace")


@pytest.fixture
async def running(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Running]:
    """``sidecache run`` with the shipped config in front of ``upstream``, on loopback only."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    # No --admin-host flag exists; the shipped config binds 0.0.0.0. No drain wait in tests.
    config["server"].update(admin_host="127.0.0.1", drain_delay="0s")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    port, admin_port = free_port(), free_port()
    log = tmp_path / "sidecache.log"
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            str(SIDECACHE),
            "run",
            "--config",
            str(config_file),
            "--upstream",
            upstream.url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--redis-url",
            "",
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proc = Running(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", log)
    try:
        await wait_until_serving(proc, port)
        yield proc
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_run_serves_a_miss_then_a_hit(running, upstream):
    async with aiohttp.ClientSession() as session:
        first = await session.post(f"{running.proxy_url}/agents/select", json={"task": "plan"})
        second = await session.post(f"{running.proxy_url}/agents/select", json={"task": "plan"})

        assert first.status == 200
        assert first.headers["Cache-Status"] == "sidecache; fwd=miss; stored"
        assert second.headers["Cache-Status"] == "sidecache; hit; detail=l1"
        assert await second.json() == await first.json()
    assert upstream.calls["/agents/select"] == 1


async def test_run_answers_healthz_on_the_admin_port(running):
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.admin_url}/healthz") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_run_exits_cleanly_on_sigterm(running):
    running.process.send_signal(signal.SIGTERM)

    returncode = await asyncio.wait_for(running.process.wait(), EXIT_DEADLINE)

    assert returncode == 0, _log(running)
