"""``server.workers`` > 1: a supervisor process runs N worker processes that share the
proxy port with SO_REUSEPORT (the kernel spreads connections over them).

Each worker is ``sidecache run`` re-executed with ``--worker I``, so it loads the same config
and flags. Worker 0 also serves the admin port and runs the system monitor; every worker
writes its metrics under one ``PROMETHEUS_MULTIPROC_DIR``, and the admin port adds them up.
The workers share cache state the way replicas do, through Redis (required: a purge must
reach every worker's L1). SIGTERM / SIGINT are passed on; the supervisor exits when all
workers have, with the first non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile

log = logging.getLogger(__name__)


def supervise(argv: list[str], workers: int) -> int:
    """Start ``workers`` copies of ``sidecache <argv> --worker I`` and wait for them."""
    with tempfile.TemporaryDirectory(prefix="sidecache-metrics-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        command = [sys.executable, "-m", "proxy.cli", *argv]
        children = [
            subprocess.Popen([*command, "--worker", str(index)], env=env)
            for index in range(workers)
        ]

        def forward(signum: int, _frame: object) -> None:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        return _wait(children)


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for every worker; if one fails, stop the others (a half-up server is worse
    than a restart by the orchestrator)."""
    status = 0
    pending = {child.pid: child for child in children}
    while pending:
        pid, code = os.wait()
        child = pending.pop(pid, None)
        if child is None:
            continue
        exit_code = os.waitstatus_to_exitcode(code)
        child.returncode = exit_code
        if exit_code != 0 and status == 0:
            status = exit_code if exit_code > 0 else 1
            log.error("worker %d exited with %d: stopping the others", pid, exit_code)
            for other in pending.values():
                other.terminate()
    return status
